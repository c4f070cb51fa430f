// Command guestinit is pid 1 of the project's tiny test guest image: it
// mounts the kernel file systems, prints a line on its console for the test
// that started it, and then powers off or waits, as its kernel command line
// says.
//
// Kernel command line (the `extra`/`cmdline` of the guest's config):
//
//	qvm.marker=TEXT        print "guestinit: marker TEXT" on the console
//	qvm.after=poweroff     power off when done (default)
//	qvm.after=wait         keep running until the domain is shut down
//	qvm.qrexec=1           start the qrexec agent (cmd/qrexec-agent) with
//	                       busybox as /bin and a "user" account
//	qvm.qrexec=hostile     offer dom0 control channels that carry garbage
//	qvm.keys=1             print this VM's keys read from xenstore, try to
//	                       overwrite one and to read other domains' keys
//	qvm.echo=1             print each line typed on the console, as
//	                       "guestinit: console got \"LINE\"" (quoted), and
//	                       on the keyboard (tty1, an HVM's), as
//	                       "guestinit: keyboard got \"LINE\""
//	qvm.dhcp=IFACE         ask for an address by DHCP on IFACE and print it
//	qvm.probe=LIST         with qvm.dhcp: take the leased address and try
//	                       each comma-separated probe, printing the result:
//	                       tcp:HOST:PORT (connect), udp:HOST:PORT (send),
//	                       udp:SRC>HOST:PORT (send with a forged source)
//
// Shut down by the toolstack (xl shutdown / qvm-shutdown), the guest's
// kernel runs /sbin/poweroff (u-root's, linked there by guestinit), which
// powers the domain off.
package main

import (
	"bufio"
	"context"
	"fmt"
	"os"
	"os/signal"
	"time"

	"github.com/qvm-project/qvm/bootinit"
	"github.com/u-root/u-root/pkg/cmdline"
	"golang.org/x/sys/unix"
)

// xenbusDev is the guest kernel's xenstore device.
const xenbusDev = "/dev/xen/xenbus"

func main() {
	if err := run(); err != nil {
		say("FAILED: %v", err)
	}
	say("powering off")
	if err := bootinit.PowerOff(); err != nil {
		say("FAILED: %v", err)
	}
	time.Sleep(time.Second)
}

func say(format string, args ...any) {
	fmt.Fprintf(os.Stdout, "guestinit: %s\n", fmt.Sprintf(format, args...))
}

func run() error {
	// A PV guest's orderly shutdown reaches init as SIGINT (ctrl-alt-del)
	// or SIGPWR; catch them before anything can block.
	stop := make(chan os.Signal, 1)
	signal.Notify(stop, unix.SIGINT, unix.SIGPWR, unix.SIGTERM)
	if err := bootinit.MountAll(bootinit.BaseMounts()[:3]); err != nil {
		return err
	}
	// Make ctrl-alt-del a signal to init rather than an immediate reboot.
	_ = unix.Reboot(unix.LINUX_REBOOT_CMD_CAD_OFF)
	// The kernel runs /sbin/poweroff when the toolstack asks the domain
	// to shut down.
	if err := os.MkdirAll("/sbin", 0o755); err != nil {
		return err
	}
	if err := os.Symlink("/bbin/poweroff", "/sbin/poweroff"); err != nil && !os.IsExist(err) {
		return fmt.Errorf("link /sbin/poweroff: %w", err)
	}
	cl := cmdline.NewCmdLine()
	if cl.Err != nil {
		return fmt.Errorf("read kernel command line: %w", cl.Err)
	}
	// The guest reaches xenstore through this device (the xenstore
	// package's guest transport).
	if fi, err := os.Stat(xenbusDev); err != nil {
		say("xenbus: %v", err)
	} else if fi.Mode()&os.ModeCharDevice == 0 {
		say("xenbus: %s is not a character device", xenbusDev)
	} else {
		say("xenbus: %s ok", xenbusDev)
	}
	ctx := context.Background()
	switch v, _ := cl.Flag("qvm.qrexec"); v {
	case "1":
		if err := startAgent(); err != nil {
			say("FAILED: qrexec: %v", err)
		}
	case "hostile":
		if err := startHostileAgent(ctx); err != nil {
			say("FAILED: qrexec: %v", err)
		}
	}
	if v, _ := cl.Flag("qvm.keys"); v == "1" {
		if err := showKeys(ctx); err != nil {
			say("FAILED: keys: %v", err)
		}
	}
	if ifname, ok := cl.Flag("qvm.dhcp"); ok {
		ack, err := askDHCP(ctx, ifname)
		if err != nil {
			say("FAILED: dhcp: %v", err)
		}
		if list, ok := cl.Flag("qvm.probe"); ok && ack != nil {
			if err := probeNetwork(ctx, ifname, ack, list); err != nil {
				say("FAILED: probe: %v", err)
			}
		}
	}
	if v, _ := cl.Flag("qvm.echo"); v == "1" {
		go echoConsole()
	}
	// The marker comes last: a test that sees it has seen the lines above.
	if m, ok := cl.Flag("qvm.marker"); ok {
		say("marker %s", m)
	}
	switch after, _ := cl.Flag("qvm.after"); after {
	case "", "poweroff":
		return nil
	case "wait":
		say("waiting for shutdown")
		sig := <-stop
		say("got %v", sig)
		return nil
	default:
		return fmt.Errorf("qvm.after=%q: want poweroff or wait", after)
	}
}

// echoConsole prints each line read from the console (standard input),
// quoted, until the input ends: what a test typed through qvm-console.
// An HVM's keyboard types on the first virtual terminal, whose lines are
// printed too.
func echoConsole() {
	if kbd, err := os.Open("/dev/tty1"); err == nil {
		go echoLines(kbd, "keyboard got")
	}
	echoLines(os.Stdin, "console got")
}

func echoLines(r *os.File, what string) {
	sc := bufio.NewScanner(r)
	for sc.Scan() {
		say("%s %q", what, sc.Text())
	}
}
