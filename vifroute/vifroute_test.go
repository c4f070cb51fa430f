package vifroute

import (
	"fmt"
	"net/netip"
	"os"
	"os/exec"
	"runtime"
	"strings"
	"testing"

	"github.com/vishvananda/netns"

	"github.com/qvm-project/qvm/internal/testenv"
)

func sh(t *testing.T, args ...string) string {
	t.Helper()
	out, err := exec.Command(args[0], args[1:]...).CombinedOutput()
	if err != nil {
		t.Fatalf("%s: %v\n%s", strings.Join(args, " "), err, out)
	}
	return string(out)
}

// TestRoutedVif plays dom0 and a VM in two network namespaces joined by a
// veth pair (standing in for the vif): after Up, the VM, with only its /32
// address and an on-link route to its gateway, reaches the gateway.
func TestRoutedVif(t *testing.T) {
	testenv.RequireRoot(t)
	testenv.LookPath(t, "ip")
	testenv.LookPath(t, "ping")
	id := fmt.Sprintf("%d", os.Getpid())
	dom0, guest := "qvmd0-"+id, "qvmvm-"+id
	sh(t, "ip", "netns", "add", dom0)
	t.Cleanup(func() { exec.Command("ip", "netns", "del", dom0).Run() })
	sh(t, "ip", "netns", "add", guest)
	t.Cleanup(func() { exec.Command("ip", "netns", "del", guest).Run() })
	sh(t, "ip", "-n", dom0, "link", "add", "vif9.0", "type", "veth", "peer", "name", "eth0", "netns", guest)

	// The VM side, as qubes-network-setup would do it from its keys.
	sh(t, "ip", "-n", guest, "link", "set", "lo", "up")
	sh(t, "ip", "-n", guest, "addr", "add", "10.137.0.5/32", "dev", "eth0")
	sh(t, "ip", "-n", guest, "link", "set", "eth0", "up")
	sh(t, "ip", "-n", guest, "route", "add", "10.137.255.254", "dev", "eth0", "scope", "link")
	sh(t, "ip", "-n", guest, "route", "add", "default", "via", "10.137.255.254", "dev", "eth0")

	c := Config{Interface: "vif9.0",
		VMAddrs:  []netip.Addr{netip.MustParseAddr("10.137.0.5")},
		Gateways: []netip.Addr{netip.MustParseAddr("10.137.255.254")}}
	inNetns(t, dom0, func() error { return Up(c) })
	// Up again replaces rather than failing.
	inNetns(t, dom0, func() error { return Up(c) })

	routes := sh(t, "ip", "-n", dom0, "route", "show", "dev", "vif9.0")
	if !strings.Contains(routes, "10.137.0.5 scope link") {
		t.Errorf("dom0 routes:\n%s", routes)
	}
	addrs := sh(t, "ip", "-n", dom0, "addr", "show", "dev", "vif9.0")
	if !strings.Contains(addrs, "10.137.255.254/32") || !strings.Contains(addrs, "UP") {
		t.Errorf("dom0 vif:\n%s", addrs)
	}
	if out := sh(t, "ip", "netns", "exec", dom0, "cat", "/proc/sys/net/ipv4/conf/vif9.0/proxy_arp"); strings.TrimSpace(out) != "1" {
		t.Errorf("proxy_arp = %q", out)
	}
	sh(t, "ip", "netns", "exec", guest, "ping", "-c", "1", "-W", "5", "10.137.255.254")
	sh(t, "ip", "netns", "exec", dom0, "ping", "-c", "1", "-W", "5", "10.137.0.5")

	inNetns(t, dom0, func() error { return Down(c) })
	if routes := sh(t, "ip", "-n", dom0, "route", "show", "dev", "vif9.0"); strings.Contains(routes, "10.137.0.5") {
		t.Errorf("route left after Down:\n%s", routes)
	}
	// Down of an interface that is gone (the domain went) is not an error.
	inNetns(t, dom0, func() error { return Down(Config{Interface: "vif99.0", VMAddrs: c.VMAddrs}) })
}

// inNetns runs f on a thread moved into the named namespace.
func inNetns(t *testing.T, name string, f func() error) {
	t.Helper()
	done := make(chan error)
	go func() {
		runtime.LockOSThread() // the thread is dropped afterwards, not reused
		ns, err := netns.GetFromName(name)
		if err != nil {
			done <- err
			return
		}
		defer ns.Close()
		if err := netns.Set(ns); err != nil {
			done <- err
			return
		}
		done <- f()
	}()
	if err := <-done; err != nil {
		t.Fatal(err)
	}
}
