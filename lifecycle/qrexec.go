package lifecycle

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"golang.org/x/sys/unix"

	"github.com/qvm-project/qvm/qrexec"
	"github.com/qvm-project/qvm/store"
	"github.com/qvm-project/qvm/vchan"
	"github.com/qvm-project/qvm/xenstore"
)

// qrexec without a daemon: the VM's agent serves the control channel
// (vchan port 512, dom0 the client) and the VM's monitor holds it for as
// long as the domain lives, as Qubes' qrexec-daemon does. A command that
// runs something in the VM (qvm-run) serves its own data channel in dom0
// and asks the monitor, on a unix socket only root can use
// (run/NAME.qrexec), to send the agent the EXEC_CMDLINE that names it.
// What the agent sends is read by package qrexec's bounded readers only.

const (
	controlPort = 512
	// A data channel's port is dataPortBase + the pid of the process
	// serving it: unique among live processes without any allocator.
	dataPortBase = 513
	// Data channels use 64 KiB rings each way (Qubes' default buffer).
	dataOrder = 16
	// requestLimit bounds a request's wait for the monitor's answer.
	requestLimit = 10 * time.Second
)

// agentWait bounds the monitor's wait for the agent on one request (the
// caller's own wait, its VM's qrexec_timeout, is usually shorter: it
// hangs up).
const agentWait = 10 * time.Minute

// ErrNoAgent is returned (wrapped) when a VM's agent did not connect.
var ErrNoAgent = errors.New("its qrexec agent did not connect")

func qrexecSocketPath(st *store.Store, name string) string {
	return filepath.Join(st.Dir(), runLockDir, name+".qrexec")
}

// agentLink is the monitor's hold on a VM's control channel.
type agentLink struct {
	mu    sync.Mutex
	ctl   *qrexec.Control
	ready chan struct{} // closed while ctl is set
}

func (l *agentLink) set(c *qrexec.Control) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.ctl = c
	if c != nil {
		close(l.ready)
	} else {
		l.ready = make(chan struct{})
	}
}

// wait returns the control channel once the agent is connected.
func (l *agentLink) wait(ctx context.Context) (*qrexec.Control, error) {
	l.mu.Lock()
	ready := l.ready
	l.mu.Unlock()
	select {
	case <-ready:
	case <-ctx.Done():
		return nil, ErrNoAgent
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.ctl == nil {
		return nil, ErrNoAgent
	}
	return l.ctl, nil
}

// serveQrexec is the monitor's qrexec work for domain domid of VM name:
// it connects to the agent's control channel whenever the agent offers
// one, and serves requests on the VM's socket. It returns a function
// that stops it and removes the socket and dom0's channel keys for the
// domain.
func (m *Manager) serveQrexec(ctx context.Context, name string, domid uint32, wait time.Duration) (stop func(), err error) {
	if m.XS == nil {
		return func() {}, nil
	}
	ctx, cancel := context.WithCancel(ctx)
	// A killed domain cannot finish dying while dom0 maps its pages, as
	// it does for the agent's control channel, and libxl reports its
	// death only once it is gone: let go as soon as xenstored releases
	// the domain, which it does when the domain starts dying.
	if err := onDomainGone(ctx, m.XS, domid, func() {
		m.log().Info("qrexec: domain released, closing the agent's channel", "vm", name, "domid", domid)
		cancel()
	}); err != nil {
		cancel()
		return nil, fmt.Errorf("qrexec of %s: watch its domain: %w", name, err)
	}
	path := qrexecSocketPath(m.Store, name)
	_ = os.Remove(path)
	old := unix.Umask(0o077)
	ln, err := net.ListenUnix("unix", &net.UnixAddr{Name: path, Net: "unix"})
	unix.Umask(old)
	if err != nil {
		cancel()
		return nil, fmt.Errorf("qrexec socket of %s: %w", name, err)
	}
	link := &agentLink{ready: make(chan struct{})}
	var wg sync.WaitGroup
	wg.Go(func() { m.holdControl(ctx, name, domid, link) })
	wg.Go(func() {
		for {
			c, err := ln.AcceptUnix()
			if err != nil {
				return
			}
			wg.Go(func() { m.serveRequest(ctx, name, c, link, wait) })
		}
	})
	return func() {
		cancel()
		ln.Close()
		_ = os.Remove(path)
		wg.Wait()
		rmctx, done := context.WithTimeout(context.Background(), 10*time.Second)
		defer done()
		_ = m.XS.Rm(rmctx, vchan.KeysDir(0, domid))
	}, nil
}

// holdControl keeps dom0's end of the agent's control channel.
func (m *Manager) holdControl(ctx context.Context, name string, domid uint32, link *agentLink) {
	for ctx.Err() == nil {
		conn, err := vchan.Client(ctx, m.XS, domid, controlPort)
		if err != nil {
			if ctx.Err() == nil {
				m.log().Warn("qrexec: connect to the agent", "vm", name, "err", err)
				sleep(ctx, time.Second)
			}
			continue
		}
		stop := context.AfterFunc(ctx, func() { conn.Close() })
		_ = conn.SetDeadline(time.Now().Add(10 * time.Second))
		ctl, err := qrexec.NewControl(conn)
		if err == nil {
			_ = conn.SetDeadline(time.Time{})
			m.log().Info("qrexec: agent connected", "vm", name)
			link.set(ctl)
			err = ctl.Serve(ctx)
			link.set(nil)
		}
		stop()
		conn.Close()
		if ctx.Err() == nil {
			m.log().Warn("qrexec: control channel ended", "vm", name, "err", err)
			sleep(ctx, time.Second)
		}
	}
}

func sleep(ctx context.Context, d time.Duration) {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
	case <-ctx.Done():
	}
}

// serveRequest answers one request on the VM's socket: an EXEC_CMDLINE
// for a data channel in dom0, forwarded to the agent once it is connected
// (waiting up to wait, or until the caller hangs up); the answer is
// SERVICE_CONNECT, SERVICE_REFUSED with the reason, or
// CONNECTION_TERMINATED when no agent connected.
func (m *Manager) serveRequest(ctx context.Context, name string, c *net.UnixConn, link *agentLink, wait time.Duration) {
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(wait + requestLimit))
	refuse := func(why string) { _ = qrexec.WriteMessage(c, qrexec.ServiceRefused, []byte(why)) }
	if uid, err := peerUID(c); err != nil || uid != 0 {
		refuse("only root may run commands in VMs")
		return
	}
	msg, err := qrexec.ReadMessage(c, qrexec.MaxControl)
	if err != nil {
		return
	}
	p, err := qrexec.ParseExecParams(msg.Data)
	if err != nil || msg.Type != qrexec.ExecCmdline || p.ConnectDomain != 0 || p.ConnectPort < dataPortBase {
		refuse(fmt.Sprintf("bad request (%v)", err))
		return
	}
	// Wait for the agent until wait passes or the caller gives up
	// (closes its end: the read below returns).
	wctx, done := context.WithTimeout(ctx, wait)
	defer done()
	go func() {
		var b [1]byte
		_, _ = c.Read(b[:])
		done()
	}()
	ctl, err := link.wait(wctx)
	if err != nil {
		// Not a refusal: the answer says the agent is missing.
		_ = qrexec.WriteMessage(c, qrexec.ConnectionTerminated, []byte(fmt.Sprintf("%v within %v (does the VM run qrexec-agent?)", err, wait)))
		return
	}
	if err := ctl.Exec(p); err != nil {
		refuse(err.Error())
		return
	}
	_ = qrexec.WriteMessage(c, qrexec.ServiceConnect, nil)
}

func peerUID(c *net.UnixConn) (uint32, error) {
	raw, err := c.SyscallConn()
	if err != nil {
		return 0, err
	}
	var cred *unix.Ucred
	var cerr error
	if err := raw.Control(func(fd uintptr) { cred, cerr = unix.GetsockoptUcred(int(fd), unix.SOL_SOCKET, unix.SO_PEERCRED) }); err != nil {
		return 0, err
	}
	if cerr != nil {
		return 0, cerr
	}
	return cred.Uid, nil
}

// Exec runs cmdline ("USER:COMMAND", see qrexec.Command) in running VM
// name through its agent, with stdin (nil: none), stdout and stderr as
// the command's streams, and returns its exit code. wait bounds the wait
// for the agent and for its connection to the data channel.
func (m *Manager) Exec(ctx context.Context, name, cmdline string, wait time.Duration, stdin io.Reader, stdout, stderr io.Writer) (int, error) {
	if m.XS == nil {
		return 0, ErrNoHypervisor
	}
	domid, err := m.domainByName(ctx, name)
	if err != nil {
		return 0, err
	}
	sweepDataChannels(ctx, m.XS, domid)
	port := dataPortBase + os.Getpid()
	conn, err := vchan.Server(ctx, m.XS, domid, port, dataOrder, dataOrder)
	if err != nil {
		return 0, fmt.Errorf("qrexec data channel for %s: %w", name, err)
	}
	defer conn.Close()
	stop := context.AfterFunc(ctx, func() { conn.Close() })
	defer stop()
	// A domain that dies (qvm-kill, a crash) never says so on the
	// channel: its end just stops. Watch for its release instead.
	var gone atomic.Bool
	wctx, unwatch := context.WithCancel(ctx)
	defer unwatch()
	if err := onDomainGone(wctx, m.XS, domid, func() { gone.Store(true); conn.Close() }); err != nil {
		return 0, fmt.Errorf("%s: watch its domain: %w", name, err)
	}
	whileRunning := func(err error) error {
		if gone.Load() {
			return fmt.Errorf("%s: its domain %d went away during the run (%w)", name, domid, err)
		}
		return fmt.Errorf("%s: %w", name, err)
	}
	if err := m.askMonitor(ctx, name, qrexec.ExecParams{ConnectPort: uint32(port), Cmdline: cmdline}, wait); err != nil {
		return 0, err
	}
	cctx, done := context.WithTimeout(ctx, wait)
	err = conn.WaitConnected(cctx)
	done()
	if err != nil {
		return 0, whileRunning(fmt.Errorf("the agent did not connect to the data channel within %v: %w", wait, err))
	}
	code, err := qrexec.Run(ctx, conn, stdin, stdout, stderr)
	if err != nil {
		return 0, whileRunning(err)
	}
	return code, nil
}

// onDomainGone calls gone, once, when xenstored releases domain domid
// (the domain was destroyed or died), until ctx ends.
func onDomainGone(ctx context.Context, xs *xenstore.Client, domid uint32, gone func()) error {
	w, err := xs.Watch(ctx, "@releaseDomain")
	if err != nil {
		return err
	}
	go func() {
		defer func() {
			uctx, done := context.WithTimeout(context.Background(), 5*time.Second)
			defer done()
			_ = w.Unwatch(uctx)
		}()
		for {
			select {
			case <-ctx.Done():
				return
			case _, ok := <-w.Events():
				if !ok {
					return
				}
				// Every release fires the watch (and it fires once at
				// once): ask about this domain.
				if in, err := xs.IsDomainIntroduced(ctx, domid); err == nil && !in {
					gone()
					return
				}
			}
		}
	}()
	return nil
}

// sweepDataChannels removes the keys of data channels to domain domid
// whose serving process is gone: a qvm-run that was killed (SIGKILL)
// could not remove its own. The port says the pid (dataPortBase + pid);
// a pid in use again keeps its keys (the next qvm-run with it replaces
// them). The keys are dom0's own, under /local/domain/0.
func sweepDataChannels(ctx context.Context, xs *xenstore.Client, domid uint32) {
	dir := vchan.KeysDir(0, domid)
	ports, err := xs.Directory(ctx, dir)
	if err != nil {
		return
	}
	for _, name := range ports {
		port, err := strconv.Atoi(name)
		if err != nil || port <= dataPortBase {
			continue
		}
		pid := port - dataPortBase
		if pid == os.Getpid() || unix.Kill(pid, 0) != unix.ESRCH {
			continue
		}
		_ = xs.Rm(ctx, dir+"/"+name)
	}
}

// askMonitor sends a request to the VM's monitor and reads its answer.
func (m *Manager) askMonitor(ctx context.Context, name string, p qrexec.ExecParams, wait time.Duration) error {
	b, err := p.Marshal()
	if err != nil {
		return err
	}
	c, err := m.dialMonitor(ctx, name, wait)
	if err != nil {
		return err
	}
	defer c.Close()
	return ask(c, name, b, wait)
}

// dialMonitor connects to the qrexec socket of VM name's monitor. A
// monitor that runs (it holds the VM's run lock) but has not made its
// socket yet, as just after qvm-start hands the domain over, is waited
// for, up to wait.
func (m *Manager) dialMonitor(ctx context.Context, name string, wait time.Duration) (net.Conn, error) {
	path := qrexecSocketPath(m.Store, name)
	deadline := time.Now().Add(wait)
	for {
		var d net.Dialer
		c, err := d.DialContext(ctx, "unix", path)
		if err == nil {
			return c, nil
		}
		early := errors.Is(err, unix.ENOENT) || errors.Is(err, unix.ECONNREFUSED)
		if !early || !Starting(m.Store)(name) || time.Now().After(deadline) {
			return nil, fmt.Errorf("%s: no qrexec service from its monitor (was it started by this qvm?): %w", name, err)
		}
		select {
		case <-ctx.Done():
			return nil, fmt.Errorf("%s: wait for its monitor's qrexec socket: %w", name, ctx.Err())
		case <-time.After(monitorSocketPoll):
		}
	}
}

// monitorSocketPoll is how often dialMonitor looks for a socket to come.
const monitorSocketPoll = 50 * time.Millisecond

// ask sends the request req over c, a connection to the monitor of VM
// name, and reads the answer. The monitor waits for the agent for as
// long as the caller does: when wait passes without an answer, the
// caller hangs up (ending the monitor's wait) and says the agent is
// missing.
func ask(c net.Conn, name string, req []byte, wait time.Duration) error {
	_ = c.SetWriteDeadline(time.Now().Add(requestLimit))
	if err := qrexec.WriteMessage(c, qrexec.ExecCmdline, req); err != nil {
		return fmt.Errorf("%s: %w", name, err)
	}
	_ = c.SetReadDeadline(time.Now().Add(wait + time.Second))
	ans, err := qrexec.ReadMessage(c, 4096)
	if errors.Is(err, os.ErrDeadlineExceeded) {
		return fmt.Errorf("%s: %w within %v (does the VM run qrexec-agent?)", name, ErrNoAgent, wait)
	}
	if err != nil {
		return fmt.Errorf("%s: no answer from its monitor: %w", name, err)
	}
	switch ans.Type {
	case qrexec.ServiceConnect:
		return nil
	case qrexec.ServiceRefused:
		return fmt.Errorf("%w: %s", ErrRefused, ans.Data)
	case qrexec.ConnectionTerminated:
		return fmt.Errorf("%s: %s", name, ans.Data)
	}
	return fmt.Errorf("%s: unexpected answer %v from its monitor", name, ans.Type)
}

// ErrRefused is returned (wrapped) when the monitor refused a request.
var ErrRefused = errors.New("qrexec request refused")
