package lifecycle

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"syscall"
	"time"

	"github.com/qvm-project/qvm/domconfig"
	"github.com/qvm-project/qvm/logfile"
	"github.com/qvm-project/qvm/store"
	"github.com/qvm-project/qvm/vm"
	"github.com/qvm-project/qvm/vmconsole"
	"github.com/qvm-project/qvm/xenstore"
)

// An HVM's serial console is served by qvm-stubdom-dm, the dom0 side of
// its stubdomain, on the same log and socket (domconfig gives it their
// paths). A PV or PVH VM's text console is served by its monitor (see the
// vmconsole package): qvm-start reads the name of the pseudo-terminal
// xenconsoled made for the domain while the domain is still paused (the
// guest can rewrite the key once it runs) and hands it to the monitor,
// which is then the console's only reader: it keeps a bounded log and
// relays the console to qvm-console on a unix socket in the run directory.

// consoleTTYWait bounds how long a start waits, the domain paused, for
// xenconsoled to name the console's pseudo-terminal (it does at once when
// it runs).
const consoleTTYWait = 5 * time.Second

// ConsoleLogPath is VM name's console log (and its rotated copy, .1).
func ConsoleLogPath(st *store.Store, name string) string {
	return filepath.Join(st.LogDir(), name+".console.log")
}

// ConsoleSocketPath is the socket on which the monitor of VM name serves
// its console.
func ConsoleSocketPath(st *store.Store, name string) string {
	return filepath.Join(st.Dir(), runLockDir, name+".console")
}

// consoleTTY returns the pseudo-terminal xenconsoled made for domain
// domid's primary console, waiting for it up to consoleTTYWait. The
// domain must be paused: before it ran, the key holds what xenconsoled
// wrote. A domain whose console xenconsoled does not serve (an HVM's is
// its device model's) has none: "".
func consoleTTY(ctx context.Context, xs *xenstore.Client, domid uint32) (string, error) {
	dir := fmt.Sprintf("/local/domain/%d/console", domid)
	typ, err := xs.ReadString(ctx, dir+"/type")
	if errors.Is(err, syscall.ENOENT) {
		return "", nil
	}
	if err != nil {
		return "", fmt.Errorf("console of domain %d: %w", domid, err)
	}
	if typ != "xenconsoled" {
		return "", nil
	}
	ctx, cancel := context.WithTimeout(ctx, consoleTTYWait)
	defer cancel()
	w, err := xs.Watch(ctx, dir+"/tty")
	if err != nil {
		return "", fmt.Errorf("console of domain %d: %w", domid, err)
	}
	defer func() {
		uctx, done := context.WithTimeout(context.WithoutCancel(ctx), 5*time.Second)
		defer done()
		_ = w.Unwatch(uctx)
	}()
	for {
		tty, err := xs.ReadString(ctx, dir+"/tty")
		if err != nil && !errors.Is(err, syscall.ENOENT) {
			return "", fmt.Errorf("console of domain %d: %w", domid, err)
		}
		if tty != "" {
			if len(tty) > vmconsole.MaxPathLen {
				return "", fmt.Errorf("console of domain %d: a pseudo-terminal name of %d bytes", domid, len(tty))
			}
			return tty, nil
		}
		select {
		case <-ctx.Done():
			return "", fmt.Errorf("console of domain %d: xenconsoled named no pseudo-terminal within %v (does xenconsoled run?)", domid, consoleTTYWait)
		case _, ok := <-w.Events():
			if !ok {
				return "", fmt.Errorf("console of domain %d: watch ended: %v", domid, w.Err())
			}
		}
	}
}

// serveConsole serves VM name's console on pseudo-terminal tty until ctx
// ends or the console does; stop ends it and waits.
func (m *Manager) serveConsole(ctx context.Context, name, tty string) (stop func(), err error) {
	pty, err := vmconsole.OpenPTY(tty)
	if err != nil {
		return nil, err
	}
	if err := os.MkdirAll(m.Store.LogDir(), 0o755); err != nil {
		pty.Close()
		return nil, fmt.Errorf("console log of %s: %w", name, err)
	}
	log, err := logfile.Open(ConsoleLogPath(m.Store, name), vmconsole.LogLimit)
	if err != nil {
		pty.Close()
		return nil, fmt.Errorf("console log of %s: %w", name, err)
	}
	ln, err := vmconsole.Listen(ConsoleSocketPath(m.Store, name))
	if err != nil {
		pty.Close()
		log.Close()
		return nil, fmt.Errorf("console of %s: %w", name, err)
	}
	ctx, cancel := context.WithCancel(ctx)
	done := make(chan struct{})
	go func() {
		defer close(done)
		defer log.Close()
		defer pty.Close()
		if err := vmconsole.NewServer(pty, log, m.log().With("vm", name)).Serve(ctx, ln); err != nil {
			m.log().Warn("console", "vm", name, "err", err)
		}
	}()
	return func() { cancel(); <-done }, nil
}

// ErrNoConsole is returned (wrapped) by qvm-console for a running VM
// whose console qvm does not serve.
var ErrNoConsole = errors.New("has no text console served by qvm")

// ConsoleSocket returns the socket of running VM v's console, or why there
// is none.
func (m *Manager) ConsoleSocket(v *vm.View) (string, error) {
	name := v.Name()
	p := ConsoleSocketPath(m.Store, name)
	if _, err := os.Stat(p); err != nil {
		if v.VirtMode() == vm.HVM {
			return "", fmt.Errorf("%s %w: its serial console is relayed by qvm's stubdomain device model (qvm-stubdom-dm), which this run does not have (its QEMU runs in dom0: qvm-features %s %s)", name, ErrNoConsole, name, domconfig.FeatureDom0QEMU)
		}
		return "", fmt.Errorf("%s %w (started by another toolstack, before qvm served consoles, or xenconsoled gave it no pseudo-terminal: see its log, qvm's %s)", name, ErrNoConsole, logPath(m.Store, name))
	}
	return p, nil
}
