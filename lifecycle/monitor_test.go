package lifecycle

import (
	"context"
	"crypto/rand"
	"encoding/binary"
	"encoding/hex"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"sync"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/qvm-project/qvm/internal/testenv"
	"github.com/qvm-project/qvm/logfile"
)

func sh(t *testing.T, name string, args ...string) {
	t.Helper()
	if out, err := exec.Command(name, args...).CombinedOutput(); err != nil {
		t.Fatalf("%s %s: %v\n%s", name, strings.Join(args, " "), err, out)
	}
}

// buildQVM builds cmd/qvm from this checkout (or takes $QVM_BIN).
func buildQVM(t *testing.T) string {
	t.Helper()
	if p := os.Getenv("QVM_BIN"); p != "" {
		testenv.RequireFile(t, p)
		return p
	}
	goTool := testenv.LookPath(t, "go")
	_, here, _, _ := runtime.Caller(0)
	out := filepath.Join(t.TempDir(), "qvm")
	cmd := exec.Command(goTool, "build", "-o", out, "./cmd/qvm")
	cmd.Dir = filepath.Join(filepath.Dir(here), "..")
	if b, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("go build ./cmd/qvm: %v\n%s", err, b)
	}
	return out
}

// junkFrames floods ifname in namespace ns with n IPv4/UDP packets to
// port 67 that are no DHCP message, from a thread of this process moved
// into the namespace (never returned to the scheduler's pool).
func junkFrames(t *testing.T, ns, ifname string, n int) {
	t.Helper()
	p := make([]byte, 28+32)
	p[0], p[8], p[9] = 0x45, 64, 17
	binary.BigEndian.PutUint16(p[2:], uint16(len(p)))
	copy(p[16:], net.IPv4bcast.To4())
	var sum uint32
	for i := 0; i < 20; i += 2 {
		sum += uint32(binary.BigEndian.Uint16(p[i:]))
	}
	for sum>>16 != 0 {
		sum = sum&0xffff + sum>>16
	}
	binary.BigEndian.PutUint16(p[10:], ^uint16(sum))
	binary.BigEndian.PutUint16(p[20:], 68)
	binary.BigEndian.PutUint16(p[22:], 67)
	binary.BigEndian.PutUint16(p[24:], uint16(len(p)-20))
	errc := make(chan error, 1)
	go func() {
		runtime.LockOSThread()
		f, err := os.Open("/var/run/netns/" + ns)
		if err != nil {
			errc <- err
			return
		}
		defer f.Close()
		if err := unix.Setns(int(f.Fd()), unix.CLONE_NEWNET); err != nil {
			errc <- err
			return
		}
		ifi, err := net.InterfaceByName(ifname)
		if err != nil {
			errc <- err
			return
		}
		fd, err := unix.Socket(unix.AF_PACKET, unix.SOCK_DGRAM, 0)
		if err != nil {
			errc <- err
			return
		}
		defer unix.Close(fd)
		to := &unix.SockaddrLinklayer{Protocol: 0x0008, Ifindex: ifi.Index, Halen: 6, Addr: [8]byte{0xff, 0xff, 0xff, 0xff, 0xff, 0xff}}
		for range n {
			if err := unix.Sendto(fd, p, 0, to); err != nil && err != unix.ENOBUFS {
				errc <- err
				return
			}
		}
		errc <- nil
	}()
	if err := <-errc; err != nil {
		t.Fatal(err)
	}
}

// TestMonitorBoundsTheResponderLog runs the monitor's DHCP responder as
// the monitor does (the real `qvm dhcpd`, on the VM's backend interface
// vifDOMID.0, here a veth in a namespace of its own) with QVM_DEBUG set in
// the monitor's environment, and floods it with packets it drops: the
// responder does not log at debug level, its output reaches the VM's log
// through the monitor, marked as its own, and the log stays small and
// shows the responder's summary of what it did not log one by one.
func TestMonitorBoundsTheResponderLog(t *testing.T) {
	testenv.RequireRoot(t)
	testenv.LookPath(t, "ip")
	qvm := buildQVM(t)
	m, f := setup(t)
	b := make([]byte, 2)
	rand.Read(b)
	f.next = 20000 + uint32(binary.BigEndian.Uint16(b))%10000 // a vif name no other test uses
	ctx := context.Background()
	started, err := m.Start(ctx, "direct", StartOptions{})
	if err != nil {
		t.Fatal(err)
	}
	domid := started[len(started)-1].Domid

	id := hex.EncodeToString(b)
	srvNS, cliNS := "qvmmon-"+id+"-s", "qvmmon-"+id+"-c"
	for _, ns := range []string{srvNS, cliNS} {
		sh(t, "ip", "netns", "add", ns)
		t.Cleanup(func() { exec.Command("ip", "netns", "del", ns).Run() })
	}
	vif, peer := fmt.Sprintf("vif%d.0", domid), "qm"+id+"c"
	sh(t, "ip", "link", "add", vif, "netns", srvNS, "type", "veth", "peer", "name", peer, "netns", cliNS)
	sh(t, "ip", "-n", srvNS, "link", "set", vif, "up")
	sh(t, "ip", "-n", cliNS, "link", "set", peer, "up")
	// The responder runs in the server namespace: the monitor's qvm is
	// this wrapper.
	wrapper := filepath.Join(t.TempDir(), "qvm-in-ns")
	if err := os.WriteFile(wrapper, []byte("#!/bin/sh\nexec ip netns exec "+srvNS+" "+qvm+" \"$@\"\n"), 0o755); err != nil {
		t.Fatal(err)
	}
	m.QVM = wrapper
	t.Setenv("QVM_DEBUG", "1")

	lf, err := OpenLog(m.Store, "direct")
	if err != nil {
		t.Fatal(err)
	}
	defer lf.Close()
	done := make(chan error, 1)
	go func() { done <- m.RunMonitor(ctx, "direct", domid, lf) }()
	read := func() string { b, _ := os.ReadFile(lf.Path()); return string(b) }
	for deadline := time.Now().Add(30 * time.Second); !strings.Contains(read(), "dhcpd serving"); {
		if time.Now().After(deadline) {
			t.Fatalf("responder not serving after 30s; log:\n%s", read())
		}
		time.Sleep(50 * time.Millisecond)
	}
	const frames = 100000
	junkFrames(t, cliNS, peer, frames)
	// The guest goes away: the monitor stops the responder.
	if err := f.Destroy(ctx, domid); err != nil {
		t.Fatal(err)
	}
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	log := read()
	t.Logf("%d frames sent; %d bytes of log:\n%s", frames, len(log), log)
	if len(log) > 16<<10 {
		t.Errorf("%d bytes of log for %d frames", len(log), frames)
	}
	if strings.Contains(log, "level=DEBUG") {
		t.Errorf("the responder logs at debug level: QVM_DEBUG reached it")
	}
	var summary bool
	for _, line := range strings.Split(strings.TrimSuffix(log, "\n"), "\n") {
		isResponder := strings.Contains(line, "interface="+vif)
		if isResponder && !strings.HasPrefix(line, responderPrefix) {
			t.Errorf("responder line without its prefix: %q", line)
		}
		if isResponder && strings.Contains(line, "packet log rate limit") && strings.Contains(line, "malformed=") {
			summary = true
		}
	}
	if !summary {
		t.Errorf("no summary of the packets not logged")
	}
	if !strings.Contains(log, "dhcpd stopped") {
		t.Errorf("the responder's last line is missing")
	}
}

// TestStartLoggedDropsQVMDebug: the monitor's children do not inherit
// QVM_DEBUG, whatever the monitor's environment, and their output comes
// marked and bounded.
func TestStartLoggedDropsQVMDebug(t *testing.T) {
	var b strings.Builder
	cmd := exec.Command("/bin/sh", "-c", `echo "debug=${QVM_DEBUG-unset} other=$OTHER"; echo oops >&2; printf 'no newline'`)
	cmd.Env = []string{"QVM_DEBUG=1", "OTHER=kept", "PATH=/usr/bin:/bin"}
	wait, err := startLogged(cmd, &syncWriter{w: &b}, "child: ", logfile.Limits{Burst: 10, Interval: time.Hour})
	if err != nil {
		t.Fatal(err)
	}
	if err := wait(); err != nil {
		t.Fatal(err)
	}
	got := b.String()
	for _, want := range []string{"child: debug=unset other=kept\n", "child: oops\n", "child: no newline\n"} {
		if !strings.Contains(got, want) {
			t.Errorf("output lacks %q:\n%s", want, got)
		}
	}
}

type syncWriter struct {
	mu sync.Mutex
	w  *strings.Builder
}

func (s *syncWriter) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.w.Write(p)
}
