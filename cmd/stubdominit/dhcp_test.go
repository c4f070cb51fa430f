package main

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/qvm-project/qvm/dhcpd"
	"github.com/qvm-project/qvm/internal/testenv"
	"github.com/qvm-project/qvm/stubdom/dmargs"
)

// dhcpdChildEnv makes this test binary the stubdomain's DHCP server
// process (`stubdominit dhcpd ARGS`), with ARGS in the variable, one per
// line.
const dhcpdChildEnv = "QVM_STUBDOMINIT_TEST_DHCPD"

func TestMain(m *testing.M) {
	if args := os.Getenv(dhcpdChildEnv); args != "" {
		if err := runDHCPD(context.Background(), strings.Split(args, "\n")); err != nil {
			fmt.Fprintln(os.Stderr, err)
			os.Exit(1)
		}
		os.Exit(0)
	}
	os.Exit(m.Run())
}

type lockedBuffer struct {
	mu sync.Mutex
	b  strings.Builder
}

func (l *lockedBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *lockedBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

// TestDHCPDOnBridge runs the stubdomain's DHCP server as its init starts
// it, on a bridge like the stubdomain's br0 (in a network namespace, as
// root like the stubdomain's init) with the guest's NIC behind a port:
// the sandboxed server, on its own user, answers a real client with the
// guest's lease.
func TestDHCPDOnBridge(t *testing.T) {
	testenv.RequireRoot(t)
	testenv.LookPath(t, "ip")
	udhcpc := testenv.LookPath(t, "udhcpc")
	exe, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	b := make([]byte, 3)
	rand.Read(b)
	id := hex.EncodeToString(b)
	srv, cli, port, nic := "sdi-"+id+"-s", "sdi-"+id+"-c", "sd"+id+"p", "sd"+id+"c"
	run := func(args ...string) {
		t.Helper()
		if out, err := exec.Command("ip", args...).CombinedOutput(); err != nil {
			t.Fatalf("ip %s: %v\n%s", strings.Join(args, " "), err, out)
		}
	}
	for _, ns := range []string{srv, cli} {
		run("netns", "add", ns)
		t.Cleanup(func() { exec.Command("ip", "netns", "del", ns).Run() })
	}
	mac, _ := net.ParseMAC("00:16:3e:5e:6c:09")
	run("-n", srv, "link", "add", bridgeName, "type", "bridge")
	run("link", "add", port, "netns", srv, "type", "veth", "peer", "name", nic, "netns", cli)
	run("-n", srv, "link", "set", port, "master", bridgeName)
	run("-n", srv, "link", "set", port, "up")
	run("-n", srv, "link", "set", bridgeName, "up")
	run("-n", cli, "link", "set", nic, "address", mac.String(), "up")

	n := dmargs.Net{ClientIP: netip.MustParseAddr("10.137.0.9"), Gateway: netip.MustParseAddr("10.137.0.1"),
		Netmask: net.CIDRMask(32, 32), DNS: []netip.Addr{netip.MustParseAddr("10.139.1.1")}}
	cfg := dhcpdConfig(dmargs.NIC{MAC: mac}, n)
	srvCmd := exec.Command("ip", "netns", "exec", srv, exe, "-test.run=^$")
	srvCmd.Env = append(os.Environ(), dhcpdChildEnv+"="+strings.Join(cfg.Args(), "\n"))
	out := &lockedBuffer{}
	srvCmd.Stdout, srvCmd.Stderr = out, out
	if err := srvCmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { srvCmd.Process.Kill(); srvCmd.Wait() })
	for deadline := time.Now().Add(30 * time.Second); !strings.Contains(out.String(), "dhcpd serving"); {
		if time.Now().After(deadline) {
			t.Fatalf("server not serving after 30s:\n%s", out.String())
		}
		time.Sleep(50 * time.Millisecond)
	}
	// udhcpc's environment for its script: print the lease.
	script := t.TempDir() + "/hook.sh"
	os.WriteFile(script, []byte("#!/bin/sh\n[ \"$1\" = bound ] && echo \"BOUND ip=$ip router=$router dns=$dns\"\nexit 0\n"), 0o755)
	got, err := exec.Command("ip", "netns", "exec", cli, udhcpc, "-i", nic, "-n", "-q", "-f", "-t", "5", "-T", "1", "-s", script).CombinedOutput()
	if err != nil {
		t.Fatalf("udhcpc: %v\n%s\nserver:\n%s", err, got, out.String())
	}
	if !strings.Contains(string(got), "BOUND ip=10.137.0.9 router=10.137.0.1 dns=10.139.1.1") {
		t.Errorf("udhcpc:\n%s", got)
	}
	log := out.String()
	if want := fmt.Sprintf("uid=%d", dhcpd.UserFor(ifindexIn(t, srv, bridgeName))); !strings.Contains(log, want) || !strings.Contains(log, `msg="lease given"`) {
		t.Errorf("server log lacks %s or the lease:\n%s", want, log)
	}
}

// ifindexIn is the index of interface name in namespace ns.
func ifindexIn(t *testing.T, ns, name string) int {
	t.Helper()
	b, err := exec.Command("ip", "netns", "exec", ns, "cat", "/sys/class/net/"+name+"/ifindex").Output()
	if err != nil {
		t.Fatal(err)
	}
	var idx int
	fmt.Sscan(string(b), &idx)
	return idx
}
