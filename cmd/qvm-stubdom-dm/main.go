// Command qvm-stubdom-dm is the dom0 device model of an HVM's
// stubdomain: what libxl runs in dom0 for the stubdomain in place of a
// QEMU running there as root.
//
// Xen 4.17's libxl always starts a dom0 device model for a stubdomain,
// to back its three consoles (0: the stubdomain's log, written to
// /var/log/xen/qemu-dm-GUEST.log; 1 and 2: the save and restore streams)
// and its disks with a qdisk backend, which is what libxl gives an HVM's
// CD-ROM drive. qvm names this program as the device model
// (device_model_override), and libxl runs it with QEMU's arguments, of
// which it reads -xen-domid and the QMP socket, while the stubdomain is
// still paused.
//
// It first moves the stubdomain's qdisk discs to blkback (each image on
// a read-only loop device: blkback.MoveQdisk), as qvm serves every other
// disk, and serves each disc that a VM holds (qvm-start --cdrom=VM:/path;
// qvm names them with -qvm-disc) from that VM's blkback
// (blkback.ServeDriverDisc). It connects the consoles with package consback, writes what console 0
// prints to its log file (bounded in size, control characters
// replaced), discards the others, answers libxl's few QMP questions as a
// QEMU with no devices would, and reports itself running in xenstore as
// QEMU does. It gives up root as soon as it has opened what it needs,
// before it serves anything: it runs as a user and
// group of the stubdomain's own (consback.UserFor), with no
// supplementary groups, no capabilities and no_new_privs, keeping only
// the descriptors it opened (xenstore, the grant and event channel
// devices, the log, the QMP socket, the discs' loop devices). It exits on SIGHUP or SIGTERM (how
// libxl stops a device model), on QMP quit, or when the stubdomain's
// console backends are removed.
package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"os/signal"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"

	"golang.org/x/sys/unix"

	"github.com/qvm-project/qvm/blkback"
	"github.com/qvm-project/qvm/consback"
	"github.com/qvm-project/qvm/logfile"
	"github.com/qvm-project/qvm/termtext"
	"github.com/qvm-project/qvm/vmconsole"
	"github.com/qvm-project/qvm/xendev"
	"github.com/qvm-project/qvm/xenstore"
)

// maxDomid bounds domain IDs (DOMID_FIRST_RESERVED).
const maxDomid = 0x7FF0

// maxConsoles bounds the consoles served: libxl makes three (more with
// serial ports, which qvm does not give a stubdomain's guest).
const maxConsoles = 8

// logDir is the only directory console 0's log may be in: libxl's
// (libxl_create_logfile).
const logDir = "/var/log/xen"

// logLimit bounds console 0's log; rotated once, it takes at most twice
// that.
const logLimit = 4 << 20

func main() {
	log := slog.New(slog.NewTextHandler(os.Stderr, nil)).With("prog", "qvm-stubdom-dm")
	inv, err := parseArgs(os.Args[1:])
	if err != nil {
		fmt.Fprintf(os.Stderr, "qvm-stubdom-dm: %v\n", err)
		os.Exit(2)
	}
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGHUP, syscall.SIGTERM, syscall.SIGINT)
	defer stop()
	log = log.With("domid", inv.Domid, "name", termtext.Line(inv.Name))
	if err := run(ctx, log, inv); err != nil {
		log.Error("stopped", "err", err)
		os.Exit(1)
	}
	log.Info("stopped")
}

// served is a console and where its output goes.
type served struct {
	c     consback.Console
	file  *logfile.File
	flush *termtext.Writer
	// serial, for the console of the guest's serial port, is where qvm
	// asked it to go (-qvm-console).
	serial *serialRelay
}

// stubdomSerialConsole is the stubdomain console that carries the guest's
// first serial port (libxl's STUBDOM_CONSOLE_SERIAL: QEMU in the
// stubdomain gets -serial /dev/hvc3).
const stubdomSerialConsole = 3

// serialRelay is the guest's serial console as the VM's monitor serves a
// PV console (package vmconsole): a bounded log, and a socket for
// qvm-console, both opened while the process is root.
type serialRelay struct {
	log *logfile.File
	ln  net.Listener
}

// openSerial opens the serial console's log and socket.
func openSerial(inv invocation) (*serialRelay, error) {
	f, err := logfile.Open(inv.ConsoleLog, vmconsole.LogLimit)
	if err != nil {
		return nil, fmt.Errorf("serial console log: %w", err)
	}
	ln, err := vmconsole.Listen(inv.ConsoleSocket)
	if err != nil {
		f.Close()
		return nil, fmt.Errorf("serial console: %w", err)
	}
	// Unprivileged by then, this process cannot remove it: the VM's
	// monitor does when the run ends.
	ln.(*net.UnixListener).SetUnlinkOnClose(false)
	return &serialRelay{log: f, ln: ln}, nil
}

// serve relays console c through the serial relay while fn serves it.
func (r *serialRelay) serve(ctx context.Context, log *slog.Logger, c *consback.Console, fn func() error) error {
	outR, outW := io.Pipe()
	inR, inW := io.Pipe()
	c.Out, c.In = outW, inR
	done := make(chan struct{})
	go func() {
		defer close(done)
		srv := vmconsole.NewServer(pipeRW{outR, inW}, r.log, log)
		if err := srv.Serve(ctx, r.ln); err != nil {
			log.Warn("serial console", "err", err)
		}
		inW.Close()
	}()
	err := fn()
	outW.Close() // the server reads to the end, then returns
	<-done
	return err
}

// pipeRW is a console as vmconsole serves it: the domain's output to read,
// its input to write.
type pipeRW struct {
	io.Reader
	io.Writer
}

func run(ctx context.Context, log *slog.Logger, inv invocation) error {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	xs, err := xenstore.Dial(ctx)
	if err != nil {
		return err
	}
	defer xs.Close()
	consoles, err := openConsoles(ctx, log, xs, inv)
	if err != nil {
		return err
	}
	// Deferred first, so run last: after the consoles' Serve returned.
	defer closeAll(consoles)
	gnt, err := xendev.OpenGntdev()
	if err != nil {
		return err
	}
	defer gnt.Close()
	// The loop devices stay open until the stubdomain is gone: blkback
	// opens them in its own time.
	discs, err := blkback.MoveQdisk(ctx, xs, inv.Domid)
	if err != nil {
		return err
	}
	defer func() {
		for _, d := range discs {
			d.Close()
		}
	}()
	for _, d := range discs {
		log.Info("disc served by blkback", "device", d.Path)
	}
	for _, d := range inv.Discs {
		if err := blkback.ServeDriverDisc(ctx, xs, inv.Domid, d); err != nil {
			return err
		}
		log.Info("disc served by a VM's blkback", "vdev", d.Vdev, "backend", d.Backend, "device", d.Dev, "source", termtext.Line(d.Source))
	}
	l, err := listenQMP(inv)
	if err != nil {
		return err
	}
	if err := dropPrivileges(consback.UserFor(inv.Domid)); err != nil {
		l.Close()
		return err
	}
	go serveQMP(ctx, log, l, cancel)

	b := &consback.Backend{XS: xs, Gntdev: gnt, Domid: inv.Domid, Log: log}
	var wg sync.WaitGroup
	for _, s := range consoles {
		wg.Go(func() {
			serve := func() error { return b.Serve(ctx, s.c) }
			if s.serial != nil {
				inner := serve
				serve = func() error { return s.serial.serve(ctx, log, &s.c, inner) }
			}
			if err := serve(); err != nil && ctx.Err() == nil {
				log.Warn("console ended", "console", s.c.Devid, "err", err)
			}
		})
	}
	// What QEMU writes when it is ready, and libxl waits for.
	state := fmt.Sprintf("/local/domain/0/device-model/%d/state", inv.Domid)
	if err := xs.WriteString(ctx, state, "running"); err != nil {
		cancel()
		wg.Wait()
		return fmt.Errorf("report running: %w", err)
	}
	log.Info("serving consoles", "consoles", len(consoles), "uid", consback.UserFor(inv.Domid))
	err = waitGone(ctx, xs, inv.Domid)
	cancel()
	wg.Wait()
	return err
}

// openConsoles lists the stubdomain's consoles libxl configured and opens
// what each needs before the process gives up root: an event channel
// device, and for console 0 its log file.
func openConsoles(ctx context.Context, log *slog.Logger, xs *xenstore.Client, inv invocation) ([]served, error) {
	domid := inv.Domid
	dir := filepath.Dir(consback.BackendDir(domid, 0))
	names, err := xs.Directory(ctx, dir)
	if err != nil {
		return nil, fmt.Errorf("consoles of domain %d: %w", domid, err)
	}
	var ids []int
	for _, n := range names {
		id, err := strconv.Atoi(n)
		if err != nil || id < 0 || id >= maxConsoles {
			log.Warn("console not served", "devid", termtext.Line(n))
			continue
		}
		ids = append(ids, id)
	}
	slices.Sort(ids)
	var out []served
	for _, id := range ids {
		ev, err := xendev.OpenEvtchn()
		if err != nil {
			closeAll(out)
			return nil, err
		}
		s := served{c: consback.Console{Devid: id, Evtchn: ev}}
		if id == 0 {
			if p, err := logPath(ctx, xs, domid); err != nil {
				log.Warn("console 0 not logged", "err", err)
			} else if f, err := logfile.Open(p, logLimit); err != nil {
				log.Warn("console 0 not logged", "err", err)
			} else {
				s.file, s.flush = f, termtext.NewWriter(f)
				s.c.Out = s.flush
			}
		}
		if id == stubdomSerialConsole && inv.ConsoleLog != "" {
			if s.serial, err = openSerial(inv); err != nil {
				ev.Close()
				closeAll(out)
				return nil, err
			}
		}
		out = append(out, s)
	}
	if len(out) == 0 {
		return nil, fmt.Errorf("domain %d has no consoles under %s", domid, dir)
	}
	return out, nil
}

// logPath is where libxl asked console 0's output to go ("file:PATH"),
// if it is a file in libxl's log directory. libxl writes it in the
// console's frontend directory, read-only to the domain; it is read
// while the stubdomain is still paused (libxl unpauses it once this
// process reports running), so it is what libxl wrote.
func logPath(ctx context.Context, xs *xenstore.Client, domid uint32) (string, error) {
	key := fmt.Sprintf("/local/domain/%d/console/output", domid)
	v, err := xs.ReadString(ctx, key)
	if err != nil {
		return "", err
	}
	p, err := logFileOf(v)
	if err != nil {
		return "", fmt.Errorf("%s: %w", key, err)
	}
	return p, nil
}

// logFileOf is the file an output value "file:PATH" names, if it is one
// in logDir.
func logFileOf(v string) (string, error) {
	p, ok := strings.CutPrefix(v, "file:")
	if !ok || filepath.Clean(p) != p || filepath.Dir(p) != logDir || strings.ContainsAny(p, "\x00\n") {
		return "", fmt.Errorf("output is %q, not file:%s/NAME", termtext.Cut(v, 200), logDir)
	}
	return p, nil
}

// closeAll ends the consoles: what console 0's filter holds goes to its
// log, then the log and the event channel devices are closed.
func closeAll(s []served) {
	for _, c := range s {
		c.c.Evtchn.Close()
		if c.file != nil {
			c.flush.Flush()
			c.file.Close()
		}
		if c.serial != nil {
			c.serial.ln.Close()
			c.serial.log.Close()
		}
	}
}

// listenQMP opens the QMP socket libxl named, replacing a stale one as
// QEMU does.
func listenQMP(inv invocation) (net.Listener, error) {
	if inv.QMPFD >= 0 {
		f := os.NewFile(uintptr(inv.QMPFD), "qmp")
		defer f.Close()
		l, err := net.FileListener(f)
		if err != nil {
			return nil, fmt.Errorf("QMP socket fd %d: %w", inv.QMPFD, err)
		}
		return l, nil
	}
	if err := os.Remove(inv.QMPPath); err != nil && !errors.Is(err, os.ErrNotExist) {
		return nil, fmt.Errorf("QMP socket: %w", err)
	}
	old := unix.Umask(0o077)
	l, err := net.Listen("unix", inv.QMPPath)
	unix.Umask(old)
	if err != nil {
		return nil, fmt.Errorf("QMP socket: %w", err)
	}
	// The unprivileged process cannot remove it; libxl does when it
	// destroys the stubdomain.
	l.(*net.UnixListener).SetUnlinkOnClose(false)
	return l, nil
}

// dropPrivileges makes the process user and group id, with no
// supplementary groups, which clears every capability (the Go runtime
// changes all threads), and sets no_new_privs. It checks the result.
func dropPrivileges(id int) error {
	if os.Getuid() != 0 {
		return fmt.Errorf("must start as root (libxl runs it so), to give up root for user %d", id)
	}
	if err := syscall.Setgroups(nil); err != nil {
		return fmt.Errorf("drop groups: %w", err)
	}
	if err := syscall.Setresgid(id, id, id); err != nil {
		return fmt.Errorf("become group %d: %w", id, err)
	}
	if err := syscall.Setresuid(id, id, id); err != nil {
		return fmt.Errorf("become user %d: %w", id, err)
	}
	if err := unix.Prctl(unix.PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0); err != nil {
		return fmt.Errorf("no_new_privs: %w", err)
	}
	var hdr = unix.CapUserHeader{Version: unix.LINUX_CAPABILITY_VERSION_3}
	var data [2]unix.CapUserData
	if err := unix.Capget(&hdr, &data[0]); err != nil {
		return fmt.Errorf("capabilities: %w", err)
	}
	for _, d := range data {
		if d.Effective != 0 || d.Permitted != 0 {
			return fmt.Errorf("capabilities left after becoming user %d: %+v", id, data)
		}
	}
	if os.Getuid() != id || os.Geteuid() != id || os.Getgid() != id || os.Getegid() != id {
		return fmt.Errorf("still uid %d gid %d after becoming user %d", os.Geteuid(), os.Getegid(), id)
	}
	return nil
}

// waitGone returns when ctx ends or the stubdomain's console backends are
// removed (libxl destroying it).
func waitGone(ctx context.Context, xs *xenstore.Client, domid uint32) error {
	dir := filepath.Dir(consback.BackendDir(domid, 0))
	w, err := xs.Watch(ctx, dir)
	if err != nil {
		return fmt.Errorf("watch %s: %w", dir, err)
	}
	defer w.Unwatch(context.WithoutCancel(ctx))
	for {
		if _, err := xs.Directory(ctx, dir); errors.Is(err, syscall.ENOENT) {
			return nil
		} else if err != nil && ctx.Err() == nil {
			return err
		}
		select {
		case <-ctx.Done():
			return nil
		case _, ok := <-w.Events():
			if !ok {
				if ctx.Err() != nil {
					return nil
				}
				return fmt.Errorf("watch %s: %w", dir, w.Err())
			}
		}
	}
}
