package main

import (
	"fmt"
	"path/filepath"
	"strconv"
	"strings"

	"github.com/qvm-project/qvm/blkback"
	"github.com/qvm-project/qvm/vmconsole"
)

// invocation is what this process takes from the QEMU command line libxl
// gives the device model of a stubdomain (libxl_dm.c,
// libxl__build_device_model_args_new with -machine xenpv). The other
// arguments are QEMU's and mean nothing here.
type invocation struct {
	// Domid is the stubdomain's (-xen-domid).
	Domid uint32
	// QMPPath is the unix socket libxl's QMP client connects to (-chardev
	// socket,id=libxl-cmd,path=...); QMPFD instead a listening socket
	// libxl opened (fd=N, under dm_restrict); -1 for none.
	QMPPath string
	QMPFD   int
	// Name is the stubdomain's name (-name), for logs.
	Name string
	// Discs are the discs other VMs serve the stubdomain (-qvm-disc,
	// from qvm through libxl's extra_pv: see blkback.DriverDisc).
	Discs []blkback.DriverDisc
	// ConsoleLog and ConsoleSocket are where the guest's serial console
	// goes (-qvm-console LOG SOCKET, from qvm): its log, and the socket
	// qvm-console attaches to. Empty: the serial console is discarded.
	ConsoleLog, ConsoleSocket string
}

// discFlag is qvm's own argument: a disc a driver domain serves.
const discFlag = "-qvm-disc"

// qmpChardev is the id of the chardev libxl's QMP client uses.
const qmpChardev = "libxl-cmd"

// parseArgs reads an invocation from the device model arguments.
func parseArgs(args []string) (invocation, error) {
	inv := invocation{QMPFD: -1}
	domid := false
	for i := 0; i < len(args); i++ {
		next := func() (string, error) {
			if i+1 >= len(args) {
				return "", fmt.Errorf("%s needs a value", args[i])
			}
			i++
			return args[i], nil
		}
		switch args[i] {
		case "-xen-domid":
			v, err := next()
			if err != nil {
				return inv, err
			}
			n, err := strconv.ParseUint(v, 10, 32)
			if err != nil || n == 0 || n >= maxDomid {
				return inv, fmt.Errorf("-xen-domid %q: not a domain ID of a stubdomain (1-%d)", v, maxDomid-1)
			}
			inv.Domid, domid = uint32(n), true
		case discFlag:
			v, err := next()
			if err != nil {
				return inv, err
			}
			d, err := blkback.ParseDriverDisc(v)
			if err != nil {
				return inv, fmt.Errorf("%s: %w", discFlag, err)
			}
			inv.Discs = append(inv.Discs, d)
		case vmconsole.DMFlag:
			logf, err := next()
			if err != nil {
				return inv, err
			}
			sock, err := next()
			if err != nil {
				return inv, err
			}
			for _, p := range []string{logf, sock} {
				if !filepath.IsAbs(p) || filepath.Clean(p) != p {
					return inv, fmt.Errorf("%s %s %s: paths must be absolute and clean", vmconsole.DMFlag, logf, sock)
				}
			}
			inv.ConsoleLog, inv.ConsoleSocket = logf, sock
		case "-name":
			v, err := next()
			if err != nil {
				return inv, err
			}
			inv.Name = v
		case "-chardev":
			v, err := next()
			if err != nil {
				return inv, err
			}
			opts := chardevOpts(v)
			if opts["id"] != qmpChardev {
				continue
			}
			if p, ok := opts["path"]; ok {
				if !filepath.IsAbs(p) {
					return inv, fmt.Errorf("-chardev %s: the QMP socket path must be absolute", v)
				}
				inv.QMPPath = p
			}
			if f, ok := opts["fd"]; ok {
				n, err := strconv.Atoi(f)
				if err != nil || n < 3 {
					return inv, fmt.Errorf("-chardev %s: fd %q is not an inherited descriptor", v, f)
				}
				inv.QMPFD = n
			}
		}
	}
	if !domid {
		return inv, fmt.Errorf("no -xen-domid: this is the device model libxl starts for a stubdomain (device_model_override), not a command to run by hand")
	}
	if inv.QMPPath == "" && inv.QMPFD < 0 {
		return inv, fmt.Errorf("no -chardev socket,id=%s,...: libxl gives its QMP socket that way", qmpChardev)
	}
	return inv, nil
}

// chardevOpts splits QEMU's "backend,key=value,..." option string; the
// first field, without '=', is the backend.
func chardevOpts(s string) map[string]string {
	m := map[string]string{}
	for i, f := range strings.Split(s, ",") {
		k, v, ok := strings.Cut(f, "=")
		if !ok && i == 0 {
			m["backend"] = k
			continue
		}
		m[k] = v
	}
	return m
}
