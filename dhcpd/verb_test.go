package dhcpd

import (
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/qvm-project/qvm/internal/testenv"
	"github.com/qvm-project/qvm/internal/testio"
)

// qvmBinary is the qvm program to test: $QVM_BIN (make test sets it), or
// one built from this checkout.
func qvmBinary(t *testing.T) string {
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

// TestQvmDhcpdVerb runs `qvm dhcpd` as qvm-start would: a real client gets
// the lease from flags, the verb logs one line for the lease and stops
// cleanly on SIGTERM.
func TestQvmDhcpdVerb(t *testing.T) {
	qvm := qvmBinary(t)
	verbs, err := exec.Command(qvm, "--list-verbs").Output()
	if err != nil {
		t.Fatalf("qvm --list-verbs: %v", err)
	}
	if !strings.Contains("\n"+string(verbs), "\ndhcpd\n") {
		testenv.Missing(t, "verb dhcpd is not in cmd/qvm's verb table (add {\"dhcpd\", ..., runDHCPD})")
	}
	udhcpc := testenv.LookPath(t, "udhcpc")
	l := newLink(t, testClientMAC)

	// Bad flags: a usage error, exit status 2, nothing started.
	bad := exec.Command("ip", "netns", "exec", l.srvNS, qvm, "dhcpd", "--interface", l.srvIf, "--mac", testClientMAC, "--ip", "10.137.0.5")
	var ee *exec.ExitError
	if out, err := bad.CombinedOutput(); !errors.As(err, &ee) || ee.ExitCode() != 2 || !strings.Contains(string(out), "--gateway is required") {
		t.Errorf("missing --gateway: %v\n%s", err, out)
	}

	stderr := &testio.Buffer{}
	cmd := exec.Command("ip", "netns", "exec", l.srvNS, qvm, "dhcpd", "--interface", l.srvIf, "--mac", testClientMAC,
		"--ip", "10.137.0.5", "--gateway", "10.137.0.1", "--lease-time", "2h")
	cmd.Stderr = stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cmd.Process.Kill() })
	deadline := time.Now().Add(30 * time.Second)
	for !strings.Contains(stderr.String(), "dhcpd serving") {
		if time.Now().After(deadline) {
			t.Fatalf("qvm dhcpd not serving after 30s:\n%s", stderr.String())
		}
		time.Sleep(50 * time.Millisecond)
	}

	dir := t.TempDir()
	hook := hookScript(t, dir, "")
	for i := 0; i < 2; i++ { // twice: the second lease is logged at debug level only
		out, err := exec.Command("ip", "netns", "exec", l.cliNS, udhcpc, "-i", l.cliIf, "-n", "-q", "-f", "-t", "5", "-T", "1", "-s", hook).CombinedOutput()
		if err != nil {
			t.Fatalf("udhcpc: %v\n%s", err, out)
		}
	}
	env, ok := hookEnv(t, dir, "bound", 0)
	if !ok {
		t.Fatal("udhcpc not bound")
	}
	wantEnv(t, "udhcpc", env, map[string]string{"ip": "10.137.0.5", "subnet": "255.255.255.255", "router": "10.137.0.1", "dns": "10.139.1.1 10.139.1.2", "lease": "7200"})

	cmd.Process.Signal(syscall.SIGTERM)
	done := make(chan error, 1)
	go func() { done <- cmd.Wait() }()
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("qvm dhcpd exited with %v after SIGTERM:\n%s", err, stderr.String())
		}
	case <-time.After(20 * time.Second):
		t.Fatalf("qvm dhcpd still running 20s after SIGTERM:\n%s", stderr.String())
	}
	log := stderr.String()
	if n := strings.Count(log, `msg="lease given"`); n != 1 {
		t.Errorf("%d lease lines, want 1:\n%s", n, log)
	}
	if !strings.Contains(log, "client=00:16:3e:5e:6c:05") || !strings.Contains(log, "ip=10.137.0.5") || !strings.Contains(log, "dhcpd stopped") {
		t.Errorf("log lacks the lease or the stop line:\n%s", log)
	}
}
