package lifecycle

import (
	"context"
	"errors"
	"net"
	"os"
	"os/exec"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/qvm-project/qvm/internal/testenv"
	"github.com/qvm-project/qvm/qrexec"
	"github.com/qvm-project/qvm/xenstore"
	"github.com/qvm-project/qvm/xenstore/xenstoretest"
)

// unixPair is a connected pair of unix stream sockets.
func unixPair(t *testing.T) (*net.UnixConn, *net.UnixConn) {
	t.Helper()
	fds, err := unix.Socketpair(unix.AF_UNIX, unix.SOCK_STREAM|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		t.Fatal(err)
	}
	conn := func(fd int) *net.UnixConn {
		f := os.NewFile(uintptr(fd), "socketpair")
		defer f.Close()
		c, err := net.FileConn(f)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { c.Close() })
		return c.(*net.UnixConn)
	}
	return conn(fds[0]), conn(fds[1])
}

// request sends one request as qvm-run does and returns the monitor's answer.
func request(t *testing.T, m *Manager, link *agentLink, wait time.Duration, p qrexec.ExecParams) qrexec.Message {
	t.Helper()
	cli, srv := unixPair(t)
	done := make(chan struct{})
	go func() {
		defer close(done)
		m.serveRequest(context.Background(), "work", srv, link, wait)
	}()
	b := append(make([]byte, 8), p.Cmdline...)
	b[4], b[5] = byte(p.ConnectPort), byte(p.ConnectPort>>8)
	b[0] = byte(p.ConnectDomain)
	if err := qrexec.WriteMessage(cli, qrexec.ExecCmdline, append(b, 0)); err != nil {
		t.Fatal(err)
	}
	ans, err := qrexec.ReadMessage(cli, 4096)
	if err != nil {
		t.Fatalf("no answer: %v", err)
	}
	<-done
	return ans
}

// TestServeRequest checks the monitor's side of qvm-run's request: a good
// one reaches the agent's control channel as it was sent and is answered
// SERVICE_CONNECT; a request for another domain's channel or a reserved
// port, or one made while no agent is connected, is refused with the reason.
func TestServeRequest(t *testing.T) {
	testenv.RequireRoot(t) // the monitor serves root only
	m := &Manager{}
	link := &agentLink{ready: make(chan struct{})}

	// No agent: refused once the wait is over.
	ans := request(t, m, link, 50*time.Millisecond, qrexec.ExecParams{ConnectPort: 600, Cmdline: "root:true"})
	if ans.Type != qrexec.ConnectionTerminated || !strings.Contains(string(ans.Data), "agent did not connect") {
		t.Fatalf("without an agent: %v %q", ans.Type, ans.Data)
	}

	// An agent: dom0's end of its control channel, the far end read here.
	ctlDom0, ctlAgent := unixPair(t)
	go qrexec.SayHello(ctlAgent)
	ctl, err := qrexec.NewControl(ctlDom0)
	if err != nil {
		t.Fatal(err)
	}
	link.set(ctl)
	ans = request(t, m, link, time.Minute, qrexec.ExecParams{ConnectPort: 600, Cmdline: "DEFAULT:QUBESRPC qubes.VMShell dom0"})
	if ans.Type != qrexec.ServiceConnect {
		t.Fatalf("good request: %v %q", ans.Type, ans.Data)
	}
	got, err := qrexec.ReadMessage(ctlAgent, qrexec.MaxControl)
	if err != nil {
		t.Fatal(err)
	}
	p, err := qrexec.ParseExecParams(got.Data)
	if err != nil || got.Type != qrexec.ExecCmdline || p.ConnectDomain != 0 || p.ConnectPort != 600 || p.Cmdline != "DEFAULT:QUBESRPC qubes.VMShell dom0" {
		t.Fatalf("the agent got %v %+v %v", got.Type, p, err)
	}

	for _, bad := range []qrexec.ExecParams{
		{ConnectDomain: 3, ConnectPort: 600, Cmdline: "root:true"},
		{ConnectPort: controlPort, Cmdline: "root:true"},
	} {
		if ans := request(t, m, link, time.Minute, bad); ans.Type != qrexec.ServiceRefused || !strings.Contains(string(ans.Data), "bad request") {
			t.Errorf("request %+v: %v %q", bad, ans.Type, ans.Data)
		}
	}
}

// serveWaiting has the monitor serve one request on a new connection with
// no agent and an hour's wait; it returns the caller's end and a channel
// closed when the monitor is done with the request.
func serveWaiting(t *testing.T) (*net.UnixConn, <-chan struct{}) {
	t.Helper()
	m := &Manager{}
	link := &agentLink{ready: make(chan struct{})}
	cli, srv := unixPair(t)
	done := make(chan struct{})
	go func() {
		defer close(done)
		m.serveRequest(context.Background(), "work", srv, link, time.Hour)
	}()
	return cli, done
}

// TestServeRequestCallerHangsUp: a caller that gives up while the agent is
// not there ends the monitor's wait at once.
func TestServeRequestCallerHangsUp(t *testing.T) {
	testenv.RequireRoot(t) // the monitor serves root only
	cli, done := serveWaiting(t)
	b, _ := qrexec.ExecParams{ConnectPort: 600, Cmdline: "root:true"}.Marshal()
	if err := qrexec.WriteMessage(cli, qrexec.ExecCmdline, b); err != nil {
		t.Fatal(err)
	}
	cli.Close()
	select {
	case <-done:
	case <-time.After(time.Minute): // bounds a hang; the wait would be an hour
		t.Fatal("the monitor still waits for the agent after the caller hung up")
	}
}

// TestAskAgentMissing: the caller waits for the agent as long as it was
// told (qrexec_timeout), however long the monitor would, then hangs up,
// which ends the monitor's wait too, and says the agent is missing.
func TestAskAgentMissing(t *testing.T) {
	testenv.RequireRoot(t) // the monitor serves root only
	cli, done := serveWaiting(t)
	b, _ := qrexec.ExecParams{ConnectPort: 600, Cmdline: "root:true"}.Marshal()
	err := ask(cli, "work", b, 50*time.Millisecond)
	if !errors.Is(err, ErrNoAgent) || !strings.Contains(err.Error(), "within 50ms") {
		t.Fatalf("ask without an agent: %v", err)
	}
	cli.Close()
	select {
	case <-done:
	case <-time.After(time.Minute): // bounds a hang; the monitor's wait is an hour
		t.Fatal("the monitor still waits after the caller gave up")
	}
}

// TestOnDomainGone: on the real xenstored, a running domain's death (the
// hypervisor reports it dying) calls gone once; another domain's does not.
func TestOnDomainGone(t *testing.T) {
	d := xenstoretest.Start(t)
	xs := d.Client()
	d.Guest(11)
	d.Guest(12)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	gone := make(chan struct{}, 2)
	if err := onDomainGone(ctx, xs, 11, func() { gone <- struct{}{} }); err != nil {
		t.Fatal(err)
	}
	// Another domain dies: the watch fires, domain 11 still runs.
	if err := d.MarkDying(12); err != nil {
		t.Fatal(err)
	}
	waitReleased(t, xs, 12)
	select {
	case <-gone:
		t.Fatal("gone called for another domain's death")
	default:
	}
	if err := d.MarkDying(11); err != nil {
		t.Fatal(err)
	}
	select {
	case <-gone:
	case <-time.After(time.Minute): // bounds a hang
		t.Fatal("gone not called after the domain died")
	}
}

// waitReleased waits (bounded) until xenstored has released domid.
func waitReleased(t *testing.T, xs *xenstore.Client, domid uint32) {
	t.Helper()
	for deadline := time.Now().Add(time.Minute); ; time.Sleep(10 * time.Millisecond) {
		if in, err := xs.IsDomainIntroduced(context.Background(), domid); err == nil && !in {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("domain %d still introduced a minute after its death", domid)
		}
	}
}

// TestSweepDataChannels: the keys of a data channel whose qvm-run is gone
// (a process that has exited) are removed; those of live processes (this
// one, init) and names that are no data port stay.
func TestSweepDataChannels(t *testing.T) {
	xs := xenstoretest.Start(t).Client()
	ctx := context.Background()
	dead := exec.Command("true")
	if err := dead.Run(); err != nil {
		t.Fatal(err)
	}
	port := func(pid int) string { return strconv.Itoa(dataPortBase + pid) }
	keep := []string{port(os.Getpid()), port(1), "512", "x"}
	for _, p := range append([]string{port(dead.Process.Pid)}, keep...) {
		if err := xs.WriteString(ctx, "/local/domain/0/data/vchan/7/"+p+"/ring-ref", "8"); err != nil {
			t.Fatal(err)
		}
	}
	sweepDataChannels(ctx, xs, 7)
	got, err := xs.Directory(ctx, "/local/domain/0/data/vchan/7")
	slices.Sort(got)
	slices.Sort(keep)
	if err != nil || !slices.Equal(got, keep) {
		t.Errorf("after the sweep: %v, %v; want %v (the exited process's %s gone)", got, err, keep, port(dead.Process.Pid))
	}
}

// TestDialMonitorWaitsForSocket: just after qvm-start hands a domain over,
// the monitor runs (it holds the run lock) before its qrexec socket
// exists; a qvm-run then waits for the socket instead of failing. Without
// a monitor it fails at once.
func TestDialMonitorWaitsForSocket(t *testing.T) {
	m, _ := setup(t)
	ctx := context.Background()
	// (a wait of an hour: were it waited, the test would time out)
	if _, err := m.dialMonitor(ctx, "work", time.Hour); err == nil || !strings.Contains(err.Error(), "no qrexec service") {
		t.Fatalf("no monitor: %v", err)
	}
	lock, err := m.lockRun("work")
	if err != nil {
		t.Fatal(err)
	}
	defer lock.Close()
	if _, err := m.dialMonitor(ctx, "work", 200*time.Millisecond); err == nil {
		t.Fatal("a monitor that never makes its socket: no error")
	}
	made := make(chan error, 1)
	go func() {
		time.Sleep(300 * time.Millisecond)
		ln, err := net.Listen("unix", qrexecSocketPath(m.Store, "work"))
		made <- err
		if err == nil {
			c, _ := ln.Accept()
			if c != nil {
				c.Close()
			}
			ln.Close()
		}
	}()
	c, err := m.dialMonitor(ctx, "work", time.Minute)
	if err != nil {
		t.Fatalf("socket made after the dial began: %v", err)
	}
	c.Close()
	if err := <-made; err != nil {
		t.Fatal(err)
	}
}
