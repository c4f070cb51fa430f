package lifecycle

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"strconv"
	"strings"
	"time"

	"github.com/qvm-project/qvm/blkback"
	"github.com/qvm-project/qvm/domconfig"
	"github.com/qvm-project/qvm/termtext"
)

// A disc in another VM (qvm-start --cdrom=VM:/path), as Qubes does it:
// the VM, asked through qrexec as root, puts the file on a read-only loop
// device of its own; its blkback serves that device to the HVM's
// stubdomain (blkback.DriverDisc); when the HVM's run ends its monitor
// asks the VM to detach the device. What the VM answers is bounded and
// taken only in one exact form: "/dev/loopN MAJOR:MINOR".

// ErrDiscSetup is returned (wrapped) when the VM holding a disc did not
// put it on a loop device.
var ErrDiscSetup = errors.New("cannot serve the disc from its VM")

// servedDisc is a loop device a VM made for a run: what the monitor asks
// it to detach, while the VM's domain is still the one that made it.
type servedDisc struct {
	VM    string
	Domid uint32
	Dev   string
}

// String is the disc as the handoff carries it: VM DOMID DEV.
func (d servedDisc) String() string { return fmt.Sprintf("%s %d %s", d.VM, d.Domid, d.Dev) }

// parseServedDisc reads a servedDisc from the handoff.
func parseServedDisc(f []string) (servedDisc, error) {
	if len(f) != 3 || !blkback.IsLoopName(f[2]) {
		return servedDisc{}, fmt.Errorf("bad disc %q", strings.Join(f, " "))
	}
	n, err := strconv.ParseUint(f[1], 10, 16)
	if err != nil || n == 0 {
		return servedDisc{}, fmt.Errorf("bad disc domain %q", f[1])
	}
	return servedDisc{VM: f[0], Domid: uint32(n), Dev: f[2]}, nil
}

// Bounds of what a VM may answer: the loop device and its number on
// standard output, a reason on standard error.
const (
	maxDiscAnswer = 64
	maxDiscError  = 4 << 10
)

// loopScript puts file on a free loop device, read-only, and prints the
// device and its number. It runs as root in the VM under its /bin/sh,
// with busybox's losetup or util-linux's (no --show in busybox; another
// losetup may take the free device between the two calls, so it tries
// again). It is one line, as a qrexec command line is.
func loopScript(file string) string {
	return `p=` + shQuote(file) + `; ` +
		`if [ ! -f "$p" ] && [ ! -b "$p" ]; then echo "$p: no such file" >&2; exit 2; fi; ` +
		`i=0; until d=$(losetup -f) && losetup -r "$d" "$p"; do i=$((i+1)); if [ $i -ge 3 ]; then exit 1; fi; done; ` +
		`stat -L -c '%n %t:%T' "$d"`
}

// shQuote quotes s for a POSIX shell.
func shQuote(s string) string { return `'` + strings.ReplaceAll(s, `'`, `'\''`) + `'` }

// parseLoopAnswer takes the VM's answer to loopScript: exactly
// "/dev/loopN MAJOR:MINOR\n" (hex numbers, as stat prints them).
func parseLoopAnswer(b []byte) (dev string, major, minor uint32, err error) {
	s, ok := strings.CutSuffix(string(b), "\n")
	dev, node, ok2 := strings.Cut(s, " ")
	maj, mnr, ok3 := strings.Cut(node, ":")
	if !ok || !ok2 || !ok3 || !blkback.IsLoopName(dev) {
		return "", 0, 0, fmt.Errorf("the VM answered %q, not \"/dev/loopN MAJOR:MINOR\"", termtext.Cut(string(b), maxDiscAnswer))
	}
	var nums [2]uint64
	for i, h := range []string{maj, mnr} {
		n, err := strconv.ParseUint(h, 16, 32)
		if err != nil || len(h) > 5 || n >= []uint64{1 << 12, 1 << 20}[i] {
			return dev, 0, 0, fmt.Errorf("the VM answered %q: not a device number", termtext.Cut(string(b), maxDiscAnswer))
		}
		nums[i] = n
	}
	return dev, uint32(nums[0]), uint32(nums[1]), nil
}

// boundedBuffer keeps the first max bytes written to it and counts the
// rest.
type boundedBuffer struct {
	buf  bytes.Buffer
	max  int
	over bool
}

func (b *boundedBuffer) Write(p []byte) (int, error) {
	if room := b.max - b.buf.Len(); room < len(p) {
		b.over = true
		b.buf.Write(p[:max(room, 0)])
		return len(p), nil
	}
	return b.buf.Write(p)
}

// serveDisc asks running VM vm to put file on a loop device for an HVM's
// CD-ROM and returns the disc for the stubdomain. wait is the VM's
// qrexec_timeout; the command gets discRunLimit more to finish. On error
// no loop device the VM named is left attached.
func (m *Manager) serveDisc(ctx context.Context, vm, file string, wait time.Duration) (*blkback.DriverDisc, error) {
	fail := func(err error) (*blkback.DriverDisc, error) {
		return nil, fmt.Errorf("--cdrom=%s:%s: %w: %w", vm, file, ErrDiscSetup, err)
	}
	domid, err := m.domainByName(ctx, vm)
	if err != nil {
		return fail(fmt.Errorf("the VM where the media is located must be running: %w", err))
	}
	out, errOut := &boundedBuffer{max: maxDiscAnswer}, &boundedBuffer{max: maxDiscError}
	rctx, cancel := context.WithTimeout(ctx, wait+discRunLimit)
	code, err := m.Exec(rctx, vm, "root:"+loopScript(file), wait, nil, out, errOut)
	cancel()
	if err != nil {
		return fail(err)
	}
	if code != 0 {
		why := strings.TrimSpace(termtext.Lines(errOut.buf.String()))
		if why == "" {
			why = "no reason given"
		}
		return fail(fmt.Errorf("%s could not put the file on a loop device (exit %d): %s (the VM needs losetup and its kernel loop devices, and xen-blkback to serve them)", vm, code, why))
	}
	dev, major, minor, err := parseLoopAnswer(out.buf.Bytes())
	if out.over {
		err = fmt.Errorf("the VM answered more than %d bytes", maxDiscAnswer)
	}
	if err != nil {
		if blkback.IsLoopName(dev) {
			m.detachDisc(ctx, servedDisc{VM: vm, Domid: domid, Dev: dev}, wait)
		}
		return fail(err)
	}
	return &blkback.DriverDisc{Vdev: domconfig.CDROMVdev, Backend: domid, Major: major, Minor: minor, Dev: dev, Source: file}, nil
}

// detachDisc asks the VM to detach the loop device it made for a run,
// if the VM's domain is still the one that made it (a VM that stopped
// took its loop devices with it). The kernel detaches a device still in
// use (by blkback) once it is let go. Failures are logged: the run is
// over either way.
func (m *Manager) detachDisc(ctx context.Context, d servedDisc, wait time.Duration) {
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), wait+discRunLimit)
	defer cancel()
	if id, err := m.domainByName(ctx, d.VM); err != nil || id != d.Domid {
		m.log().Info("the VM that served the disc is gone", "vm", d.VM, "device", d.Dev)
		return
	}
	errOut := &boundedBuffer{max: maxDiscError}
	code, err := m.Exec(ctx, d.VM, "root:losetup -d "+d.Dev, wait, nil, io.Discard, errOut)
	switch {
	case err != nil:
		m.log().Warn("cannot detach the disc's loop device", "vm", d.VM, "device", d.Dev, "err", err)
	case code != 0:
		m.log().Warn("cannot detach the disc's loop device", "vm", d.VM, "device", d.Dev, "exit", code, "stderr", termtext.Line(errOut.buf.String()))
	default:
		m.log().Info("disc's loop device detached", "vm", d.VM, "device", d.Dev)
	}
}

// discRunLimit bounds how long a disc's command in the VM may run once
// its agent connected: a VM that never answers cannot hold a start or a
// monitor.
const discRunLimit = time.Minute

// discDetachWait bounds the monitor's wait for the VM's agent when it
// detaches a disc.
const discDetachWait = 30 * time.Second
