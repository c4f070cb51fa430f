// Command dom0init is pid 1 of the project's dom0 image: it brings up the
// Xen control domain (kernel file systems, the Xen kernel modules, xenfs,
// xenstored, xen-init-dom0, xenconsoled), then runs what the kernel command
// line asks and powers the machine off when that ends, so that QEMU (or the
// real machine) stops instead of hanging.
//
// Kernel command line (dom0's, i.e. the text after the dom0 kernel in
// Xen's multiboot module list):
//
//	qvm.run=shell            an interactive shell on the console (default)
//	qvm.run=job              the job in the host share (see package hostjob);
//	                         needs qvm.share
//	qvm.run="exec:/path a b" run /path with arguments a b, then power off
//	qvm.run=none             power off as soon as dom0 is ready
//	qvm.share=TAG            mount the virtio 9p share TAG on /mnt/host
//	qvm.echo=1               also copy the job's output to the console
//
// Each step prints a line starting with "dom0init:" on the console. When a
// step fails, dom0init prints "dom0init: FAILED: ..." and powers off.
package main

import (
	"context"
	"fmt"
	"os"
	"time"

	"github.com/qvm-project/qvm/bootinit"
)

func main() {
	c := newConsole(os.Stdout)
	err := func() (err error) {
		defer func() {
			if p := recover(); p != nil {
				err = fmt.Errorf("panic: %v", p)
			}
		}()
		return run(context.Background(), c)
	}()
	if err != nil {
		c.say("FAILED: %v", err)
	}
	c.say("powering off")
	if err := bootinit.PowerOff(); err != nil {
		c.say("FAILED: %v", err)
	}
	// Returning from pid 1 panics the kernel; under Xen that ends the
	// machine too (Xen reboots it, and QEMU -no-reboot exits).
	time.Sleep(time.Second)
}
