package dhcpd

import (
	"bufio"
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"runtime"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/insomniacslk/dhcp/dhcpv4"
	"golang.org/x/sys/unix"

	"github.com/qvm-project/qvm/internal/testenv"
	"github.com/qvm-project/qvm/internal/testio"
)

// The responder under test runs in a child process: this test binary
// re-executed under `ip netns exec` with helperEnv set, so that it lives in
// the server's namespace and its sandbox (which is for the whole process)
// does not touch the test process.
const (
	helperEnv = "QVM_DHCPD_TEST_HELPER" // JSON helperConfig
	// parentEnv makes the test binary play a VM's monitor: it starts the
	// helper (namespace, then JSON helperConfig, in parentEnv as
	// "NS JSON") with Pdeathsig, prints its pid once it serves, and
	// waits to be killed.
	parentEnv = "QVM_DHCPD_TEST_PARENT"
	readyLine = "DHCPD-READY"
	statsLine = "DHCPD-STATS "
)

type helperConfig struct {
	Interface string
	ServerIP  string
	Leases    []helperLease
	// Forbidden makes the helper make a system call outside the seccomp
	// filter once it is sandboxed.
	Forbidden bool
	// Attack, when set, makes the helper play a compromised responder
	// once sandboxed (see attack in sandbox_test.go).
	Attack attackConfig
	// DieWithParent sets Server.ParentDeathSignal (SIGKILL).
	DieWithParent bool
}

type helperLease struct {
	MAC, IP, Netmask, Gateway string
	DNS                       []string
	Seconds                   int
}

func TestMain(m *testing.M) {
	if cfg := os.Getenv(helperEnv); cfg != "" {
		os.Exit(runHelper(cfg))
	}
	if v := os.Getenv(parentEnv); v != "" {
		os.Exit(runParent(v))
	}
	os.Exit(m.Run())
}

// runHelper is the child: serve until SIGTERM, then print the stats.
func runHelper(cfgJSON string) int {
	var cfg helperConfig
	if err := json.Unmarshal([]byte(cfgJSON), &cfg); err != nil {
		fmt.Fprintln(os.Stderr, "helper config:", err)
		return 2
	}
	var leases []Lease
	for _, l := range cfg.Leases {
		mac, _ := net.ParseMAC(l.MAC)
		mask, _ := ParseNetmask(l.Netmask)
		dns, _ := ParseIPv4List("dns", strings.Join(l.DNS, ","))
		leases = append(leases, Lease{MAC: mac, IP: net.ParseIP(l.IP), Netmask: mask, Gateway: net.ParseIP(l.Gateway), DNS: dns, Duration: time.Duration(l.Seconds) * time.Second})
	}
	log := slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelDebug}))
	s, err := New(cfg.Interface, net.ParseIP(cfg.ServerIP), leases, log)
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	if cfg.Forbidden {
		s.afterSandbox = func(*packetConn) {
			fmt.Fprintln(os.Stderr, "helper: calling socket(2), which the filter forbids")
			fd, err := unix.Socket(unix.AF_INET, unix.SOCK_DGRAM, 0)
			fmt.Fprintf(os.Stderr, "helper: socket(2) returned %d, %v: the filter is not on\n", fd, err)
			os.Exit(3)
		}
	}
	if cfg.Attack.Kind != "" {
		s.afterSandbox = func(c *packetConn) { os.Exit(attack(cfg.Attack, c)) }
	}
	if cfg.DieWithParent {
		s.ParentDeathSignal = syscall.SIGKILL
	}
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM)
	defer stop()
	go func() {
		<-s.Ready()
		fmt.Println(readyLine)
	}()
	if err := s.Serve(ctx); err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	b, _ := json.Marshal(s.Stats())
	fmt.Printf("%s%s\n", statsLine, b)
	return 0
}

// runParent is the monitor-like parent of TestResponderDiesWithParent.
func runParent(v string) int {
	ns, cfg, _ := strings.Cut(v, " ")
	exe, err := os.Executable()
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	// As the monitor does: the signal follows the forking thread, which
	// stays.
	runtime.LockOSThread()
	cmd := exec.Command("ip", "netns", "exec", ns, exe, "-test.run=^$")
	cmd.Env = append(slices.DeleteFunc(os.Environ(), func(kv string) bool { return strings.HasPrefix(kv, parentEnv+"=") }), helperEnv+"="+cfg)
	cmd.Stderr = os.Stderr
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	out, err := cmd.StdoutPipe()
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	if err := cmd.Start(); err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	sc := bufio.NewScanner(out)
	if !sc.Scan() || sc.Text() != readyLine {
		fmt.Fprintln(os.Stderr, "parent: the responder did not get ready")
		return 1
	}
	fmt.Printf("RESPONDER %d\n", cmd.Process.Pid)
	select {}
}

// TestResponderDiesWithParent: a responder started with Pdeathsig, as a
// VM's monitor starts it, dies with its killed parent only if it sets the
// signal again after its change of user, which clears it (the e2e test of
// a killed monitor found responders left behind).
func TestResponderDiesWithParent(t *testing.T) {
	if os.Getenv("QVM_DHCPD_STRACE") != "" {
		t.Skip("under strace the responder's parent is strace")
	}
	for _, die := range []bool{true, false} {
		t.Run(fmt.Sprintf("DieWithParent=%v", die), func(t *testing.T) {
			l := newLink(t, testClientMAC)
			cfg, _ := json.Marshal(helperConfig{Interface: l.srvIf, ServerIP: "10.137.0.1",
				Leases: []helperLease{qubesLease(testClientMAC)}, DieWithParent: die})
			exe, err := os.Executable()
			if err != nil {
				t.Fatal(err)
			}
			parent := exec.Command(exe, "-test.run=^$")
			parent.Env = append(os.Environ(), parentEnv+"="+l.srvNS+" "+string(cfg))
			// A file, not a pipe: the responder shares it, and outlives
			// the parent when the test fails.
			stderr, err := os.CreateTemp(t.TempDir(), "stderr")
			if err != nil {
				t.Fatal(err)
			}
			defer stderr.Close()
			parent.Stderr = stderr
			logs := func() string { b, _ := os.ReadFile(stderr.Name()); return string(b) }
			out, err := parent.StdoutPipe()
			if err != nil {
				t.Fatal(err)
			}
			if err := parent.Start(); err != nil {
				t.Fatal(err)
			}
			sc := bufio.NewScanner(out)
			var pid int
			if !sc.Scan() {
				parent.Process.Kill()
				parent.Wait()
				t.Fatalf("no responder pid from the parent:\n%s", logs())
			}
			if _, err := fmt.Sscanf(sc.Text(), "RESPONDER %d", &pid); err != nil {
				t.Fatalf("parent said %q: %v", sc.Text(), err)
			}
			t.Cleanup(func() { syscall.Kill(pid, syscall.SIGKILL) })
			parent.Process.Kill()
			parent.Wait()
			// Gone, or a zombie for init to reap.
			gone := func() bool {
				b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
				if err != nil {
					return true
				}
				_, rest, _ := strings.Cut(string(b), ") ")
				return strings.HasPrefix(rest, "Z")
			}
			// Watched long enough to see it die either way: the kernel
			// sends the signal as the parent exits.
			watch := 30 * time.Second
			if !die {
				watch = 2 * time.Second
			}
			deadline := time.Now().Add(watch)
			for !gone() && time.Now().Before(deadline) {
				time.Sleep(20 * time.Millisecond)
			}
			if die && !gone() {
				t.Errorf("the responder (pid %d) outlived its killed parent:\n%s", pid, logs())
			}
			if !die && gone() {
				t.Errorf("without DieWithParent the responder (pid %d) died with its parent: the kernel kept the signal through the change of user, so this test shows nothing", pid)
			}
		})
	}
}

// link is a veth pair between two network namespaces made for one test.
type link struct {
	srvNS, cliNS string // namespace names
	srvIf, cliIf string // interface names in them
}

func randHex(n int) string {
	b := make([]byte, n)
	rand.Read(b)
	return hex.EncodeToString(b)
}

func run(t testing.TB, name string, args ...string) string {
	t.Helper()
	out, err := exec.Command(name, args...).CombinedOutput()
	if err != nil {
		t.Fatalf("%s %s: %v\n%s", name, strings.Join(args, " "), err, out)
	}
	return string(out)
}

// newLink makes two namespaces joined by a veth pair; the client end gets
// clientMAC. Everything is deleted when the test ends.
func newLink(t testing.TB, clientMAC string) *link {
	t.Helper()
	testenv.RequireRoot(t)
	testenv.LookPath(t, "ip")
	id := randHex(3)
	l := &link{srvNS: "qvmdhcpd-" + id + "-s", cliNS: "qvmdhcpd-" + id + "-c", srvIf: "dq" + id + "s", cliIf: "dq" + id + "c"}
	for _, ns := range []string{l.srvNS, l.cliNS} {
		run(t, "ip", "netns", "add", ns)
		t.Cleanup(func() { exec.Command("ip", "netns", "del", ns).Run() })
		run(t, "ip", "-n", ns, "link", "set", "lo", "up")
	}
	run(t, "ip", "link", "add", l.srvIf, "netns", l.srvNS, "type", "veth", "peer", "name", l.cliIf, "netns", l.cliNS)
	run(t, "ip", "-n", l.srvNS, "link", "set", l.srvIf, "up")
	run(t, "ip", "-n", l.cliNS, "link", "set", l.cliIf, "address", clientMAC, "up")
	return l
}

// responder is a running helper process.
type responder struct {
	cmd    *exec.Cmd
	stderr *testio.Buffer
	lines  chan string
	done   chan error
}

func qubesLease(mac string) helperLease {
	return helperLease{MAC: mac, IP: "10.137.0.5", Netmask: "255.255.255.255", Gateway: "10.137.0.1", DNS: []string{"10.139.1.1", "10.139.1.2"}, Seconds: 3600}
}

// startResponder runs the helper in the server namespace and waits until
// it is sandboxed and serving (or, with Forbidden, until it ends).
func startResponder(t *testing.T, l *link, cfg helperConfig) *responder {
	t.Helper()
	exe, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	if cfg.Interface == "" {
		cfg.Interface = l.srvIf
	}
	if cfg.ServerIP == "" {
		cfg.ServerIP = "10.137.0.1"
	}
	b, _ := json.Marshal(cfg)
	r := &responder{stderr: &testio.Buffer{}, lines: make(chan string, 16), done: make(chan error, 1)}
	args := []string{"netns", "exec", l.srvNS, exe, "-test.run=^$"}
	if out := os.Getenv("QVM_DHCPD_STRACE"); out != "" {
		// How the seccomp list was found: strace the responder of each
		// test into $QVM_DHCPD_STRACE.<test>.
		args = append([]string{"netns", "exec", l.srvNS, "strace", "-f", "-qq", "-o", out + "." + t.Name()}, args[3:]...)
	}
	r.cmd = exec.Command("ip", args...)
	r.cmd.Env = append(os.Environ(), helperEnv+"="+string(b))
	r.cmd.Stderr = r.stderr
	r.cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true} // signals go to its group
	out, err := r.cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := r.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() {
		sc := bufio.NewScanner(out)
		for sc.Scan() {
			r.lines <- sc.Text()
		}
		close(r.lines)
		r.done <- r.cmd.Wait()
	}()
	t.Cleanup(func() {
		syscall.Kill(-r.cmd.Process.Pid, syscall.SIGKILL)
		if t.Failed() {
			t.Logf("responder stderr:\n%s", r.stderr.String())
		}
	})
	if cfg.Forbidden || cfg.Attack.Kind != "" {
		return r
	}
	select {
	case line, ok := <-r.lines:
		if !ok || line != readyLine {
			t.Fatalf("responder did not get ready (got %q):\n%s", line, r.stderr.String())
		}
	case <-time.After(30 * time.Second):
		t.Fatalf("responder not ready after 30s:\n%s", r.stderr.String())
	}
	return r
}

// stop ends the responder with SIGTERM and returns its final stats.
func (r *responder) stop(t *testing.T) Stats {
	t.Helper()
	syscall.Kill(-r.cmd.Process.Pid, syscall.SIGTERM)
	var st Stats
	found := false
	for line := range r.lines {
		if js, ok := strings.CutPrefix(line, statsLine); ok {
			if err := json.Unmarshal([]byte(js), &st); err != nil {
				t.Fatalf("stats line %q: %v", line, err)
			}
			found = true
		}
	}
	if err := <-r.done; err != nil {
		t.Fatalf("responder exited with %v (a seccomp kill shows as signal: bad system call):\n%s", err, r.stderr.String())
	}
	if !found {
		t.Fatalf("responder printed no stats:\n%s", r.stderr.String())
	}
	return st
}

// hookScript writes a client hook that saves its environment to
// dir/env.<event>, where event is $1 (udhcpc) or $reason (dhclient,
// dhcpcd), then runs extra.
func hookScript(t *testing.T, dir, extra string) string {
	t.Helper()
	p := filepath.Join(dir, "hook.sh")
	script := "#!/bin/sh\nev=\"${reason:-$1}\"\nenv > \"" + dir + "/env.$ev.tmp\" && mv \"" + dir + "/env.$ev.tmp\" \"" + dir + "/env.$ev\"\n" + extra + "\nexit 0\n"
	if err := os.WriteFile(p, []byte(script), 0o755); err != nil {
		t.Fatal(err)
	}
	return p
}

// hookEnv reads the environment a hook saved for event, waiting for it.
func hookEnv(t *testing.T, dir, event string, wait time.Duration) (map[string]string, bool) {
	t.Helper()
	deadline := time.Now().Add(wait)
	for {
		b, err := os.ReadFile(filepath.Join(dir, "env."+event))
		if err == nil {
			env := map[string]string{}
			for _, line := range strings.Split(string(b), "\n") {
				if k, v, ok := strings.Cut(line, "="); ok {
					env[k] = v
				}
			}
			return env, true
		}
		if time.Now().After(deadline) {
			return nil, false
		}
		time.Sleep(50 * time.Millisecond)
	}
}

func wantEnv(t *testing.T, client string, env map[string]string, want map[string]string) {
	t.Helper()
	for k, v := range want {
		if got := strings.TrimSpace(env[k]); got != v {
			t.Errorf("%s: %s=%q, want %q", client, k, got, v)
		}
	}
}

const testClientMAC = "00:16:3e:5e:6c:05"

func TestRealClientUdhcpc(t *testing.T) {
	udhcpc := testenv.LookPath(t, "udhcpc")
	l := newLink(t, testClientMAC)
	r := startResponder(t, l, helperConfig{Leases: []helperLease{qubesLease(testClientMAC)}})
	dir := t.TempDir()
	hook := hookScript(t, dir, "")
	out, err := exec.Command("ip", "netns", "exec", l.cliNS, udhcpc, "-i", l.cliIf, "-n", "-q", "-f", "-t", "5", "-T", "1",
		"-s", hook, "-O", "staticroutes").CombinedOutput()
	if err != nil {
		t.Fatalf("udhcpc: %v\n%s", err, out)
	}
	env, ok := hookEnv(t, dir, "bound", 0)
	if !ok {
		t.Fatalf("udhcpc never ran its bound hook:\n%s", out)
	}
	wantEnv(t, "udhcpc", env, map[string]string{
		"ip": "10.137.0.5", "subnet": "255.255.255.255", "router": "10.137.0.1",
		"dns": "10.139.1.1 10.139.1.2", "serverid": "10.137.0.1", "lease": "3600",
		"staticroutes": "10.137.0.1/32 0.0.0.0 0.0.0.0/0 10.137.0.1",
	})
	st := r.stop(t)
	if st.Offers < 1 || st.Acks < 1 {
		t.Errorf("stats %+v: want an offer and an ack", st)
	}
}

func TestRealClientDhclient(t *testing.T) {
	dhclient := testenv.LookPath(t, "dhclient")
	l := newLink(t, testClientMAC)
	r := startResponder(t, l, helperConfig{Leases: []helperLease{qubesLease(testClientMAC)}})
	dir := t.TempDir()
	hook := hookScript(t, dir, "")
	conf := filepath.Join(dir, "dhclient.conf")
	os.WriteFile(conf, []byte(`option rfc3442-classless-static-routes code 121 = array of unsigned integer 8;
request subnet-mask, routers, domain-name-servers, rfc3442-classless-static-routes, dhcp-lease-time, dhcp-server-identifier;
`), 0o644)
	// A lease from an earlier life of the VM with another address: the
	// client starts in INIT-REBOOT asking for it, gets a NAK, then
	// discovers its real address.
	leases := filepath.Join(dir, "leases")
	exp := time.Now().Add(24 * time.Hour).UTC().Format("2006/01/02 15:04:05")
	os.WriteFile(leases, []byte(fmt.Sprintf(`lease {
  interface "%s";
  fixed-address 10.137.0.99;
  option subnet-mask 255.255.255.255;
  option dhcp-server-identifier 10.137.0.1;
  renew 4 %s;
  rebind 4 %s;
  expire 4 %s;
}
`, l.cliIf, exp, exp, exp)), 0o644)
	pidfile := filepath.Join(dir, "pid")
	t.Cleanup(func() {
		if b, err := os.ReadFile(pidfile); err == nil {
			var pid int
			fmt.Sscan(string(b), &pid)
			if pid > 0 {
				syscall.Kill(pid, syscall.SIGTERM)
			}
		}
	})
	cmd := exec.Command("timeout", "60", "ip", "netns", "exec", l.cliNS, dhclient, "-4", "-1", "-v", "-cf", conf, "-sf", hook, "-lf", leases, "-pf", pidfile, l.cliIf)
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("dhclient: %v\n%s", err, out)
	}
	env, ok := hookEnv(t, dir, "BOUND", 0)
	if !ok {
		t.Fatalf("dhclient never ran its BOUND hook:\n%s", out)
	}
	wantEnv(t, "dhclient", env, map[string]string{
		"new_ip_address": "10.137.0.5", "new_subnet_mask": "255.255.255.255", "new_routers": "10.137.0.1",
		"new_domain_name_servers": "10.139.1.1 10.139.1.2", "new_dhcp_server_identifier": "10.137.0.1",
		"new_dhcp_lease_time":                 "3600",
		"new_rfc3442_classless_static_routes": "32 10 137 0 1 0 0 0 0 0 10 137 0 1",
	})
	st := r.stop(t)
	if st.Naks < 1 || st.Acks < 1 {
		t.Errorf("stats %+v: want a NAK for the stale address, then an ACK", st)
	}
}

func TestRealClientDhcpcd(t *testing.T) {
	dhcpcd := testenv.LookPath(t, "dhcpcd")
	l := newLink(t, testClientMAC)
	r := startResponder(t, l, helperConfig{Leases: []helperLease{qubesLease(testClientMAC)}})
	dir := t.TempDir()
	hook := hookScript(t, dir, "")
	t.Cleanup(func() { removeDhcpcdState(l.cliIf) })
	out, err := exec.Command("timeout", "60", "ip", "netns", "exec", l.cliNS, dhcpcd, "-1", "-4", "-B", "-A", "-L", "-K", "-t", "20",
		"-f", "/dev/null", "-o", "domain_name_servers", "-o", "classless_static_routes", "-c", hook, l.cliIf).CombinedOutput()
	if err != nil {
		t.Fatalf("dhcpcd: %v\n%s", err, out)
	}
	env, ok := hookEnv(t, dir, "BOUND", 0)
	if !ok {
		t.Fatalf("dhcpcd never ran its BOUND hook:\n%s", out)
	}
	wantEnv(t, "dhcpcd", env, map[string]string{
		"new_ip_address": "10.137.0.5", "new_subnet_mask": "255.255.255.255", "new_routers": "10.137.0.1",
		"new_domain_name_servers": "10.139.1.1 10.139.1.2", "new_dhcp_server_identifier": "10.137.0.1",
		"new_classless_static_routes": "10.137.0.1/32 0.0.0.0 0.0.0.0/0 10.137.0.1",
	})
	// dhcpcd configures the interface itself: read it back.
	addrs := run(t, "ip", "-n", l.cliNS, "-4", "-o", "addr", "show", "dev", l.cliIf)
	if !strings.Contains(addrs, "inet 10.137.0.5/32 ") {
		t.Errorf("client interface addresses:\n%s\nwant 10.137.0.5/32", addrs)
	}
	routes := run(t, "ip", "-n", l.cliNS, "-4", "route", "show", "dev", l.cliIf)
	if !strings.Contains(routes, "default via 10.137.0.1") || !strings.Contains(routes, "10.137.0.1 ") {
		t.Errorf("client routes:\n%s\nwant the on-link route to 10.137.0.1 and the default route via it", routes)
	}
	st := r.stop(t)
	if st.Offers < 1 || st.Acks < 1 {
		t.Errorf("stats %+v: want an offer and an ack", st)
	}
}

// removeDhcpcdState deletes what dhcpcd left for an interface.
func removeDhcpcdState(ifname string) {
	for _, pat := range []string{"/var/lib/dhcpcd/" + ifname + "*", "/run/dhcpcd/" + ifname + "*"} {
		m, _ := filepath.Glob(pat)
		for _, f := range m {
			os.Remove(f)
		}
	}
}

func TestUnknownMACGetsNothing(t *testing.T) {
	dhcpcd := testenv.LookPath(t, "dhcpcd")
	l := newLink(t, "00:16:3e:5e:6c:77")
	r := startResponder(t, l, helperConfig{Leases: []helperLease{qubesLease(testClientMAC)}})
	dir := t.TempDir()
	hook := hookScript(t, dir, "")
	t.Cleanup(func() { removeDhcpcdState(l.cliIf) })
	// dhcpcd waits for ever when nobody answers: bound it twice over.
	out, err := exec.Command("timeout", "8", "ip", "netns", "exec", l.cliNS, dhcpcd, "-1", "-4", "-B", "-A", "-L", "-K", "-t", "5",
		"-f", "/dev/null", "-c", hook, l.cliIf).CombinedOutput()
	if err == nil {
		t.Errorf("dhcpcd succeeded for an unknown MAC:\n%s", out)
	}
	if env, ok := hookEnv(t, dir, "BOUND", 0); ok {
		t.Errorf("dhcpcd bound an unknown MAC to %s", env["new_ip_address"])
	}
	if addrs := run(t, "ip", "-n", l.cliNS, "-4", "-o", "addr", "show", "dev", l.cliIf); strings.Contains(addrs, "inet ") {
		t.Errorf("unknown client got an address:\n%s", addrs)
	}
	st := r.stop(t)
	if st.UnknownMAC < 1 || st.Offers != 0 || st.Acks != 0 {
		t.Errorf("stats %+v: want unknown-MAC drops and no offer or ack", st)
	}
}

// TestRealClientRenewAndRelease runs udhcpc on a routed link like dom0's
// backend interface (the server side holds the gateway address), applies
// the lease in the hook, renews it by unicast (SIGUSR1) and releases it
// on exit (-R).
func TestRealClientRenewAndRelease(t *testing.T) {
	udhcpc := testenv.LookPath(t, "udhcpc")
	l := newLink(t, testClientMAC)
	run(t, "ip", "-n", l.srvNS, "addr", "add", "10.137.0.1/32", "dev", l.srvIf)
	run(t, "ip", "-n", l.srvNS, "route", "add", "10.137.0.5/32", "dev", l.srvIf)
	r := startResponder(t, l, helperConfig{Leases: []helperLease{qubesLease(testClientMAC)}})
	dir := t.TempDir()
	hook := hookScript(t, dir, `case "$1" in bound)
  ip addr add "$ip/32" dev "$interface"
  ip route add "$router/32" dev "$interface"
  ip route add default via "$router" dev "$interface";;
esac`)
	cmd := exec.Command("ip", "netns", "exec", l.cliNS, udhcpc, "-i", l.cliIf, "-f", "-R", "-t", "5", "-T", "1", "-s", hook)
	var out testio.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cmd.Process.Kill(); cmd.Wait() })
	if _, ok := hookEnv(t, dir, "bound", 20*time.Second); !ok {
		t.Fatalf("udhcpc not bound:\n%s", out.String())
	}
	cmd.Process.Signal(syscall.SIGUSR1)
	env, ok := hookEnv(t, dir, "renew", 20*time.Second)
	if !ok {
		t.Fatalf("udhcpc did not renew:\n%s", out.String())
	}
	wantEnv(t, "udhcpc renew", env, map[string]string{"ip": "10.137.0.5", "router": "10.137.0.1", "subnet": "255.255.255.255"})
	cmd.Process.Signal(syscall.SIGTERM)
	waitErr := make(chan error, 1)
	go func() { waitErr <- cmd.Wait() }()
	select {
	case <-waitErr:
	case <-time.After(10 * time.Second):
		t.Fatalf("udhcpc did not exit on SIGTERM")
	}
	// RELEASE gets no answer: wait for the responder's debug line for it.
	deadline := time.Now().Add(10 * time.Second)
	for !strings.Contains(r.stderr.String(), "outcome=release") && time.Now().Before(deadline) {
		time.Sleep(50 * time.Millisecond)
	}
	st := r.stop(t)
	if st.Renewals < 1 || st.Releases < 1 {
		t.Errorf("stats %+v: want a renewal and a release", st)
	}
	// The unicast renewal and release reached a host address with a
	// responder on it: the kernel must not have answered "port
	// unreachable" (the guard socket's job).
	if n := icmpCounter(t, l.srvNS, "OutDestUnreachs"); n != 0 {
		t.Errorf("server namespace sent %d ICMP destination unreachable messages", n)
	}
}

// icmpCounter reads one Icmp counter of /proc/net/snmp in namespace ns.
func icmpCounter(t *testing.T, ns, name string) int {
	t.Helper()
	lines := strings.Split(run(t, "ip", "netns", "exec", ns, "cat", "/proc/net/snmp"), "\n")
	for i := 0; i+1 < len(lines); i++ {
		if !strings.HasPrefix(lines[i], "Icmp: ") || !strings.HasPrefix(lines[i+1], "Icmp: ") {
			continue
		}
		names, values := strings.Fields(lines[i]), strings.Fields(lines[i+1])
		for j := range names {
			if names[j] == name && j < len(values) {
				var n int
				fmt.Sscan(values[j], &n)
				return n
			}
		}
	}
	t.Fatalf("no Icmp counter %s in /proc/net/snmp of %s", name, ns)
	return 0
}

// TestSandboxKillsForbiddenSyscall checks the filter is on: a system call
// outside the list, made after sandboxing, kills the process by SIGSYS.
func TestSandboxKillsForbiddenSyscall(t *testing.T) {
	l := newLink(t, testClientMAC)
	r := startResponder(t, l, helperConfig{Leases: []helperLease{qubesLease(testClientMAC)}, Forbidden: true})
	for range r.lines {
	}
	var err error
	select {
	case err = <-r.done:
	case <-time.After(30 * time.Second):
		t.Fatal("helper still running 30s after its forbidden call")
	}
	var ee *exec.ExitError
	if !errors.As(err, &ee) {
		t.Fatalf("helper exited with %v, want death by SIGSYS:\n%s", err, r.stderr.String())
	}
	ws := ee.Sys().(syscall.WaitStatus)
	if !ws.Signaled() || ws.Signal() != syscall.SIGSYS {
		t.Fatalf("helper ended with %v, want killed by SIGSYS:\n%s", ws, r.stderr.String())
	}
	log := r.stderr.String()
	if !strings.Contains(log, "seccomp filter installed") || !strings.Contains(log, "any other syscall kills this process") {
		t.Errorf("no sandbox log line in:\n%s", log)
	}
	if !strings.Contains(log, "calling socket(2)") {
		t.Errorf("helper did not reach its forbidden call:\n%s", log)
	}
}

// TestSandboxedProcessHasNoPrivileges looks at every thread of a serving
// responder from outside: its own user and group (UserFor its interface),
// no capabilities, no_new_privs and a seccomp filter.
func TestSandboxedProcessHasNoPrivileges(t *testing.T) {
	if os.Getenv("QVM_DHCPD_STRACE") != "" {
		t.Skip("under strace the process looked at is strace")
	}
	l := newLink(t, testClientMAC)
	r := startResponder(t, l, helperConfig{Leases: []helperLease{qubesLease(testClientMAC)}})
	tasks, err := filepath.Glob(fmt.Sprintf("/proc/%d/task/*/status", r.cmd.Process.Pid))
	if err != nil || len(tasks) == 0 {
		t.Fatalf("no threads found for pid %d: %v", r.cmd.Process.Pid, err)
	}
	id := fmt.Sprint(UserFor(ifindex(t, l.srvNS, l.srvIf)))
	ids := strings.Join([]string{id, id, id, id}, "\t")
	want := map[string]string{
		"Uid": ids, "Gid": ids, "Groups": "",
		"CapInh": "0000000000000000", "CapPrm": "0000000000000000", "CapEff": "0000000000000000",
		"CapAmb": "0000000000000000", "NoNewPrivs": "1", "Seccomp": "2",
	}
	for _, task := range tasks {
		got := procStatus(t, task)
		for k, v := range want {
			if got[k] != v {
				t.Errorf("%s: %s = %q, want %q", task, k, got[k], v)
			}
		}
	}
	t.Logf("%d threads checked", len(tasks))
	r.stop(t)
}

// sendFrames sends raw IPv4 packets out of ifname in namespace ns, from a
// thread of this process moved into the namespace (and never returned to
// the Go scheduler's pool).
func sendFrames(t *testing.T, ns, ifname string, pkts [][]byte) { floodFrames(t, ns, ifname, pkts, 1) }

// floodFrames sends pkts rounds times over, as fast as the kernel takes
// them (see sendFrames).
func floodFrames(t *testing.T, ns, ifname string, pkts [][]byte, rounds int) {
	t.Helper()
	errc := make(chan error, 1)
	go func() {
		runtime.LockOSThread() // not unlocked: the thread dies with the goroutine
		f, err := os.Open("/var/run/netns/" + ns)
		if err != nil {
			errc <- err
			return
		}
		defer f.Close()
		if err := unix.Setns(int(f.Fd()), unix.CLONE_NEWNET); err != nil {
			errc <- fmt.Errorf("setns %s: %w", ns, err)
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
		to := &unix.SockaddrLinklayer{Protocol: htons(unix.ETH_P_IP), Ifindex: ifi.Index, Halen: 6}
		copy(to.Addr[:], broadcastMAC)
		for range rounds {
			for _, p := range pkts {
				if err := unix.Sendto(fd, p, 0, to); err != nil && err != unix.ENOBUFS {
					errc <- fmt.Errorf("send %d bytes: %w", len(p), err)
					return
				}
			}
		}
		errc <- nil
	}()
	if err := <-errc; err != nil {
		t.Fatal(err)
	}
}

// TestServeDropsBadPackets sends the serve loop junk over the wire:
// no reply, a counter and a debug line for each, and it keeps serving.
func TestServeDropsBadPackets(t *testing.T) {
	l := newLink(t, testClientMAC)
	for _, side := range [][]string{{l.srvNS, l.srvIf}, {l.cliNS, l.cliIf}} {
		run(t, "ip", "-n", side[0], "link", "set", side[1], "mtu", "9000")
	}
	r := startResponder(t, l, helperConfig{Leases: []helperLease{qubesLease(testClientMAC)}})
	disc := request(t, dhcpv4.MessageTypeDiscover).ToBytes()
	badCookie := append([]byte(nil), disc...)
	badCookie[236] = 0
	unknown := append([]byte(nil), disc...)
	unknown[28+5] = 0x77 // last byte of chaddr
	bcast := func(payload []byte) []byte { return udpPacket(net.IPv4zero, net.IPv4bcast, 68, 67, payload) }
	sendFrames(t, l.cliNS, l.cliIf, [][]byte{
		bcast(badCookie),
		bcast(disc[:100]),
		bcast(append(append([]byte(nil), disc...), make([]byte, 6000)...)), // larger than the read buffer
		bcast(unknown),
		bcast(disc), // still serving
	})
	deadline := time.Now().Add(10 * time.Second)
	for !strings.Contains(r.stderr.String(), "outcome=offer") && time.Now().Before(deadline) {
		time.Sleep(50 * time.Millisecond)
	}
	st := r.stop(t)
	if st.Malformed != 3 || st.UnknownMAC != 1 || st.Offers != 1 || st.SendErrors != 0 {
		t.Errorf("stats %+v: want 3 malformed (cookie, cut, oversized), 1 unknown MAC, 1 offer", st)
	}
	log := r.stderr.String()
	if strings.Count(log, `msg="no reply"`) != 3 || !strings.Contains(log, "dropped oversized packet") {
		t.Errorf("want three no-reply lines and one oversized line in:\n%s", log)
	}
}
