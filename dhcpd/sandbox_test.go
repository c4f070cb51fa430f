package dhcpd

import (
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"
	"unsafe"

	"golang.org/x/sys/unix"
)

// attackConfig makes the test helper play a responder whose serve loop a
// guest has taken over: once sandboxed, it makes one system call against
// something outside its own interface and process.
type attackConfig struct {
	// Kind names the attack (see attack).
	Kind string
	// Ifindex is the other interface, for the injection attacks.
	Ifindex int
	// Pid is the other responder, for the attacks on processes.
	Pid int
}

// Exit codes of a helper whose attack call returned (a call the sandbox
// refuses by default kills the process with SIGSYS instead).
const (
	attackSucceeded = 4
	attackFailed    = 5
)

// attack runs cfg's attack with the server's packet socket and returns the
// helper's exit code.
func attack(cfg attackConfig, c *packetConn) int {
	// A frame for another interface: broadcast, any content.
	frame := append([]byte{0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x02, 0, 0, 0, 0, 0x66, 0x08, 0x00},
		udpPacket(net.IPv4zero, net.IPv4bcast, 68, 67, []byte("injected by a compromised responder"))...)
	other := &unix.SockaddrLinklayer{Protocol: htons(unix.ETH_P_IP), Ifindex: cfg.Ifindex, Halen: 6}
	copy(other.Addr[:], broadcastMAC)
	fmt.Fprintf(os.Stderr, "helper: attack %s (ifindex %d, pid %d)\n", cfg.Kind, cfg.Ifindex, cfg.Pid)
	var err error
	cerr := c.rc.Control(func(fd uintptr) {
		switch cfg.Kind {
		case "sendto":
			err = unix.Sendto(int(fd), frame, 0, other)
		case "sendmsg":
			_, err = unix.SendmsgN(int(fd), frame, nil, other, 0)
		case "bind":
			if err = unix.Bind(int(fd), other); err == nil {
				_, err = unix.Write(int(fd), frame)
			}
		case "tgkill":
			err = unix.Tgkill(cfg.Pid, cfg.Pid, unix.SIGKILL)
		case "kill":
			err = unix.Kill(cfg.Pid, unix.SIGKILL)
		case "tkill":
			if _, _, e := unix.RawSyscall(unix.SYS_TKILL, uintptr(cfg.Pid), uintptr(unix.SIGKILL), 0); e != 0 {
				err = e
			}
		case "ptrace":
			err = unix.PtraceAttach(cfg.Pid)
		case "self":
			// What the Go runtime does: signal its own threads and
			// itself (signal 0 only checks).
			if err = unix.Tgkill(unix.Getpid(), unix.Gettid(), 0); err == nil {
				err = unix.Kill(unix.Getpid(), 0)
			}
		case "process_vm_readv":
			var b [8]byte
			local := []unix.Iovec{{Base: &b[0], Len: uint64(len(b))}}
			remote := []unix.RemoteIovec{{Base: uintptr(unsafe.Pointer(&b[0])), Len: len(b)}}
			_, err = unix.ProcessVMReadv(cfg.Pid, local, remote, 0)
		default:
			err = fmt.Errorf("unknown attack %q", cfg.Kind)
		}
	})
	if cerr != nil {
		err = cerr
	}
	fmt.Fprintf(os.Stderr, "helper: attack %s returned err=%v\n", cfg.Kind, err)
	if err != nil {
		return attackFailed
	}
	return attackSucceeded
}

// wantRefused waits for an attacking helper to end and checks that its
// attack was refused: killed by SIGSYS, or its call failed.
func wantRefused(t *testing.T, r *responder) {
	t.Helper()
	for range r.lines {
	}
	var err error
	select {
	case err = <-r.done:
	case <-time.After(30 * time.Second):
		t.Fatalf("attacker still running after 30s:\n%s", r.stderr.String())
	}
	log := r.stderr.String()
	if !strings.Contains(log, "helper: attack ") {
		t.Fatalf("attacker never attacked (ended with %v):\n%s", err, log)
	}
	var ee *exec.ExitError
	if !errors.As(err, &ee) {
		t.Fatalf("attacker exited with %v: its attack succeeded:\n%s", err, log)
	}
	ws := ee.Sys().(syscall.WaitStatus)
	switch {
	case ws.Signaled() && ws.Signal() == syscall.SIGSYS:
	case ws.Exited() && ws.ExitStatus() == attackFailed:
	case ws.Exited() && ws.ExitStatus() == attackSucceeded:
		t.Errorf("the attack succeeded:\n%s", log)
	default:
		t.Errorf("attacker ended with %v:\n%s", ws, log)
	}
}

// addOther adds another interface to the server's namespace of l, a veth
// whose peer is in the client's namespace, that sends nothing of its own
// (no IPv6, no IPv4 address), so that its transmit counter counts exactly
// the frames someone sends on it. It returns its name and index.
func addOther(t *testing.T, l *link) (string, int) {
	t.Helper()
	id := randHex(3)
	name, peer := "dq"+id+"o", "dq"+id+"p"
	run(t, "ip", "link", "add", name, "netns", l.srvNS, "type", "veth", "peer", "name", peer, "netns", l.cliNS)
	run(t, "ip", "netns", "exec", l.srvNS, "sysctl", "-q", "-w", "net.ipv6.conf."+name+".disable_ipv6=1")
	run(t, "ip", "-n", l.srvNS, "link", "set", name, "up")
	run(t, "ip", "-n", l.cliNS, "link", "set", peer, "up")
	return name, ifindex(t, l.srvNS, name)
}

// ifindex is the index of interface name in namespace ns.
func ifindex(t *testing.T, ns, name string) int {
	t.Helper()
	idx, err := strconv.Atoi(strings.TrimSpace(run(t, "ip", "netns", "exec", ns, "cat", "/sys/class/net/"+name+"/ifindex")))
	if err != nil {
		t.Fatal(err)
	}
	return idx
}

// txPackets reads how many frames were sent on interface name of ns.
func txPackets(t *testing.T, ns, name string) int {
	t.Helper()
	n, err := strconv.Atoi(strings.TrimSpace(run(t, "ip", "netns", "exec", ns, "cat", "/sys/class/net/"+name+"/statistics/tx_packets")))
	if err != nil {
		t.Fatal(err)
	}
	return n
}

// TestCompromisedResponderCannotSendElsewhere: a responder taken over by
// its guest tries to put a frame on another interface of its network
// namespace with its own packet socket: with an address naming the other
// interface (sendto, sendmsg), or by binding the socket to it. Nothing
// may leave the other interface. (Before per-interface sending, sendto
// with another sll_ifindex did: the kernel sends where the address says,
// whatever the socket is bound to.)
func TestCompromisedResponderCannotSendElsewhere(t *testing.T) {
	l := newLink(t, testClientMAC)
	other, idx := addOther(t, l)
	for _, kind := range []string{"sendto", "sendmsg", "bind"} {
		t.Run(kind, func(t *testing.T) {
			before := txPackets(t, l.srvNS, other)
			r := startResponder(t, l, helperConfig{Leases: []helperLease{qubesLease(testClientMAC)},
				Attack: attackConfig{Kind: kind, Ifindex: idx}})
			wantRefused(t, r)
			if n := txPackets(t, l.srvNS, other) - before; n != 0 {
				t.Errorf("%d frames left the other interface %s", n, other)
			}
		})
	}
}

// TestCompromisedResponderCannotTouchOthers: a responder taken over by
// its guest attacks the responder of another VM (another interface of the
// same namespace, as dom0's responders are): signals, ptrace, reading its
// memory. The other responder must go on serving. (Before each responder
// had its own user and signals were limited to the process itself,
// tgkill killed it: both ran as nobody.)
func TestCompromisedResponderCannotTouchOthers(t *testing.T) {
	if os.Getenv("QVM_DHCPD_STRACE") != "" {
		t.Skip("under strace the pid attacked is strace's")
	}
	l := newLink(t, testClientMAC)
	victimIf, _ := addOther(t, l)
	for _, kind := range []string{"tgkill", "kill", "tkill", "ptrace", "process_vm_readv"} {
		t.Run(kind, func(t *testing.T) {
			victim := startResponder(t, l, helperConfig{Interface: victimIf, Leases: []helperLease{qubesLease(testClientMAC)}})
			r := startResponder(t, l, helperConfig{Leases: []helperLease{qubesLease(testClientMAC)},
				Attack: attackConfig{Kind: kind, Pid: victim.cmd.Process.Pid}})
			wantRefused(t, r)
			victim.stop(t) // fails if the victim was killed
		})
	}
}

// procStatus reads a /proc/.../status file into its fields.
func procStatus(t *testing.T, path string) map[string]string {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	got := map[string]string{}
	for _, line := range strings.Split(string(b), "\n") {
		if k, v, ok := strings.Cut(line, ":"); ok {
			got[k] = strings.TrimSpace(v)
		}
	}
	return got
}

// TestRespondersHaveTheirOwnUsers: two responders on two interfaces of one
// namespace, as dom0 runs them, each run as the user and group of its
// interface, so that even without the seccomp filter the kernel would
// refuse one's signals and ptrace to the other.
func TestRespondersHaveTheirOwnUsers(t *testing.T) {
	if os.Getenv("QVM_DHCPD_STRACE") != "" {
		t.Skip("under strace the process looked at is strace")
	}
	l := newLink(t, testClientMAC)
	other, otherIdx := addOther(t, l)
	a := startResponder(t, l, helperConfig{Leases: []helperLease{qubesLease(testClientMAC)}})
	b := startResponder(t, l, helperConfig{Interface: other, Leases: []helperLease{qubesLease(testClientMAC)}})
	seen := map[string]bool{}
	for _, r := range []struct {
		p   *responder
		idx int
	}{{a, ifindex(t, l.srvNS, l.srvIf)}, {b, otherIdx}} {
		st := procStatus(t, fmt.Sprintf("/proc/%d/status", r.p.cmd.Process.Pid))
		id := fmt.Sprint(UserFor(r.idx))
		if uid, gid := strings.Fields(st["Uid"]), strings.Fields(st["Gid"]); len(uid) != 4 || uid[0] != id || len(gid) != 4 || gid[0] != id {
			t.Errorf("responder on ifindex %d: Uid %q Gid %q, want %s", r.idx, st["Uid"], st["Gid"], id)
		}
		if seen[st["Uid"]] {
			t.Errorf("two responders share the user %s", st["Uid"])
		}
		seen[st["Uid"]] = true
	}
	a.stop(t)
	b.stop(t)
}

func TestUserForStaysInItsRange(t *testing.T) {
	for _, idx := range []int{1, 2, 4096, UIDCount - 1, UIDCount, UIDCount + 5, 1<<31 - 1, -1} {
		u := UserFor(idx)
		if u < UIDBase || u >= UIDBase+UIDCount || u >= 0x7FFD8000 {
			t.Errorf("UserFor(%d) = %#x, outside %#x..%#x", idx, u, UIDBase, UIDBase+UIDCount-1)
		}
	}
	if UserFor(1) == UserFor(2) {
		t.Error("two interfaces share a user")
	}
}

// TestSandboxAllowsSignalsToItself: the filter's argument rules let the
// process signal itself and its threads, as the runtime does for
// preemption and crashes.
func TestSandboxAllowsSignalsToItself(t *testing.T) {
	l := newLink(t, testClientMAC)
	r := startResponder(t, l, helperConfig{Leases: []helperLease{qubesLease(testClientMAC)}, Attack: attackConfig{Kind: "self"}})
	for range r.lines {
	}
	err := <-r.done
	var ee *exec.ExitError
	if !errors.As(err, &ee) || ee.ExitCode() != attackSucceeded {
		t.Fatalf("helper ended with %v, want exit %d (its signals to itself allowed):\n%s", err, attackSucceeded, r.stderr.String())
	}
}
