// Package xenstoretest runs a private, real C xenstored for tests, on a
// machine without Xen.
//
// The daemon is Debian's /usr/lib/xen-4.17/bin/xenstored, started with -N
// under LD_PRELOAD of a small library (../testdata/fakexen.c) that stands in
// for the hypervisor handles it opens. The store, its permissions, quotas,
// transactions and watches are the daemon's own. Each Daemon has its own
// run directory, socket and store, and is killed when the test ends.
//
// Besides dom0's unix socket, a test can speak to the daemon as a guest
// domain through the domain's shared ring page (see Daemon.Guest), which is
// how permission checks and quotas for unprivileged domains are exercised.
package xenstoretest

import (
	"bytes"
	"context"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/qvm-project/qvm/internal/testenv"
	"github.com/qvm-project/qvm/xenstore"
)

// XenstoredPath is the C xenstored binary (package xen-utils-4.17).
const XenstoredPath = "/usr/lib/xen-4.17/bin/xenstored"

// Daemon is a running private xenstored.
type Daemon struct {
	t       testing.TB // nil for a Daemon from Launch
	RunDir  string     // XENSTORED_RUNDIR of the daemon
	Socket  string     // its unix socket (XENSTORED_PATH)
	args    []string   // extra xenstored arguments
	preload string

	mu     sync.Mutex
	cmd    *exec.Cmd
	output *bytes.Buffer
	exited chan struct{}
}

// Start starts a private xenstored with extra arguments (for example
// quotas: "-E", "10", or "--quota=transaction-nodes=5") and stops it when
// the test ends. It fails (or, outside strict mode, skips) the test when
// xenstored, gcc or the Xen headers are missing.
func Start(t testing.TB, args ...string) *Daemon {
	t.Helper()
	testenv.RequireFile(t, XenstoredPath)
	d, err := Launch(FakeXen(t), args...)
	if err != nil {
		t.Fatal(err)
	}
	d.t = t
	t.Cleanup(d.Close)
	return d
}

// Launch starts a private xenstored outside a test (benchmarks), with
// preload as the fake hypervisor library (see FakeXen). Close stops it and
// removes its run directory.
func Launch(preload string, args ...string) (*Daemon, error) {
	// A short directory: socket paths are limited to 107 bytes.
	dir, err := os.MkdirTemp("", "xs")
	if err != nil {
		return nil, err
	}
	d := &Daemon{
		RunDir:  dir,
		Socket:  filepath.Join(dir, "socket"),
		args:    args,
		preload: preload,
	}
	if err := d.start(); err != nil {
		os.RemoveAll(dir)
		return nil, err
	}
	return d, nil
}

// Close stops the daemon and removes its run directory.
func (d *Daemon) Close() {
	d.Stop()
	os.RemoveAll(d.RunDir)
}

func (d *Daemon) start() error {
	cmd := exec.Command(XenstoredPath, append([]string{"-N"}, d.args...)...)
	cmd.Env = append(d.Env(), "LD_PRELOAD="+d.preload)
	out := new(bytes.Buffer)
	cmd.Stdout, cmd.Stderr = out, out
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	os.Remove(d.Socket)
	// Pdeathsig is sent when the thread that forked the daemon exits, not
	// the process, and Go does end threads: one whose goroutine exits
	// while locked to it (a test that moved a thread into a network
	// namespace) goes with it, and with it the daemon. So fork from a
	// thread that is held until the daemon has exited.
	exited := make(chan struct{})
	started := make(chan error)
	go func() {
		runtime.LockOSThread()
		defer runtime.UnlockOSThread()
		err := cmd.Start()
		started <- err
		if err == nil {
			cmd.Wait()
			close(exited)
		}
	}()
	if err := <-started; err != nil {
		return fmt.Errorf("start %s: %w", XenstoredPath, err)
	}
	d.mu.Lock()
	d.cmd, d.output, d.exited = cmd, out, exited
	d.mu.Unlock()

	deadline := time.Now().Add(15 * time.Second)
	for {
		select {
		case <-exited:
			return fmt.Errorf("xenstored exited at start (%v): %s", cmd.ProcessState, out)
		default:
		}
		if c, err := net.Dial("unix", d.Socket); err == nil {
			c.Close()
			return nil
		}
		if time.Now().After(deadline) {
			d.Stop()
			return fmt.Errorf("xenstored did not open %s within 15s: %s", d.Socket, out)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// Env returns the environment for a program that should talk to this
// daemon (the C xenstore-* tools): the current environment with
// XENSTORED_RUNDIR and XENSTORED_PATH set.
func (d *Daemon) Env() []string {
	var env []string
	for _, e := range os.Environ() {
		if !strings.HasPrefix(e, "XENSTORED_") && !strings.HasPrefix(e, "LD_PRELOAD=") {
			env = append(env, e)
		}
	}
	return append(env, "XENSTORED_RUNDIR="+d.RunDir, "XENSTORED_PATH="+d.Socket)
}

// Pid returns the daemon's process id.
func (d *Daemon) Pid() int {
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.cmd.Process.Pid
}

// Stop kills the daemon and waits for it to exit.
func (d *Daemon) Stop() {
	d.mu.Lock()
	cmd, exited := d.cmd, d.exited
	d.mu.Unlock()
	if cmd == nil {
		return
	}
	cmd.Process.Kill()
	<-exited
}

// Restart kills the daemon and starts a new one on the same socket, with an
// empty store, as a crashed and restarted xenstored would be.
func (d *Daemon) Restart() error {
	d.Stop()
	return d.start()
}

// Client connects to the daemon as dom0 and closes the client when the test
// ends. Only for a Daemon from Start.
func (d *Daemon) Client() *xenstore.Client {
	d.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	c, err := xenstore.Open(ctx, xenstore.Config{Path: d.Socket})
	if err != nil {
		d.t.Fatal(err)
	}
	d.t.Cleanup(func() { c.Close() })
	return c
}

// MarkDying makes the fake hypervisor report the domain as dying, and
// raises the VIRQ_DOM_EXC event so the daemon notices: an introduced domain
// is then dropped and @releaseDomain fires, as when a real domain dies.
func (d *Daemon) MarkDying(domid uint32) error {
	f, err := os.Create(filepath.Join(d.RunDir, fmt.Sprintf("fakexen-dying-%d", domid)))
	if err != nil {
		return err
	}
	f.Close()
	return d.notify(0xffffffff)
}

// notify sends the daemon an event-channel notification for port.
func (d *Daemon) notify(port uint32) error {
	c, err := net.DialUnix("unixgram", nil, &net.UnixAddr{Name: filepath.Join(d.RunDir, "fakexen-evtchn"), Net: "unixgram"})
	if err != nil {
		return err
	}
	defer c.Close()
	_, err = c.Write([]byte{byte(port), byte(port >> 8), byte(port >> 16), byte(port >> 24)})
	return err
}
