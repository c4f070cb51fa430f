package vifroute

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"testing"

	"github.com/vishvananda/netns"

	"github.com/qvm-project/qvm/internal/testenv"
	"github.com/qvm-project/qvm/vmfirewall"
	"github.com/qvm-project/qvm/xenstore/xenstoretest"
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

// TestHotplug runs libxl's hotplug step as dom0's vif script does: the
// VM's addresses come from the backend's ip key in the real C xenstored,
// online filters the interface, routes them and reports the vif
// connected, offline removes the routes and the filter (package
// vmfirewall's tests send the packets).
func TestHotplug(t *testing.T) {
	testenv.RequireRoot(t)
	testenv.LookPath(t, "ip")
	ctx := context.Background()
	xs := xenstoretest.Start(t).Client()
	ns := fmt.Sprintf("qvmhp-%d", os.Getpid())
	sh(t, "ip", "netns", "add", ns)
	t.Cleanup(func() { exec.Command("ip", "netns", "del", ns).Run() })
	sh(t, "ip", "-n", ns, "link", "add", "vif7.0", "type", "veth", "peer", "name", "eth7")

	be := "/local/domain/0/backend/vif/7/0"
	if err := xs.WriteString(ctx, be+"/ip", "10.137.0.7 fd09:24ef:4179::a89:7"); err != nil {
		t.Fatal(err)
	}
	gw4, gw6 := netip.MustParseAddr("10.137.255.254"), netip.MustParseAddr("fd09:24ef:4179::a89:fffe")
	fw := vmfirewall.Filter{LockPath: filepath.Join(t.TempDir(), "fw.lock")}
	filtered := func() string {
		var vifs []string
		inNetns(t, ns, func() error {
			var err error
			vifs, err = fw.Interfaces()
			return err
		})
		return strings.Join(vifs, " ")
	}
	inNetns(t, ns, func() error { return Hotplug(ctx, xs, Online, "vif7.0", be, gw4, gw6, fw) })
	if got := filtered(); got != "vif7.0" {
		t.Errorf("filtered interfaces after online: %q", got)
	}
	if out := sh(t, "ip", "netns", "exec", ns, "cat", "/proc/sys/net/ipv4/conf/vif7.0/rp_filter"); strings.TrimSpace(out) != "1" {
		t.Errorf("rp_filter = %q, want 1", out)
	}
	routes := sh(t, "ip", "-n", ns, "route", "show", "dev", "vif7.0")
	routes6 := sh(t, "ip", "-n", ns, "-6", "route", "show", "dev", "vif7.0")
	if !strings.Contains(routes, "10.137.0.7") || !strings.Contains(routes6, "fd09:24ef:4179::a89:7") {
		t.Errorf("routes after online:\n%s%s", routes, routes6)
	}
	if addrs := sh(t, "ip", "-n", ns, "addr", "show", "dev", "vif7.0"); !strings.Contains(addrs, "10.137.255.254/32") || !strings.Contains(addrs, "fd09:24ef:4179::a89:fffe") {
		t.Errorf("gateways on the vif:\n%s", addrs)
	}
	if st, err := xs.ReadString(ctx, be+"/hotplug-status"); err != nil || st != "connected" {
		t.Errorf("hotplug-status = %q, %v", st, err)
	}
	inNetns(t, ns, func() error { return Hotplug(ctx, xs, Offline, "vif7.0", be, gw4, gw6, fw) })
	if routes := sh(t, "ip", "-n", ns, "route", "show", "dev", "vif7.0"); strings.Contains(routes, "10.137.0.7") {
		t.Errorf("route left after offline:\n%s", routes)
	}
	if got := filtered(); got != "" {
		t.Errorf("filtered interfaces after offline: %q", got)
	}
	// Offline again (or of a gone backend) is fine.
	inNetns(t, ns, func() error { return Hotplug(ctx, xs, Offline, "vif7.0", be, gw4, gw6, fw) })

	xs.WriteString(ctx, be+"/ip", "10.137.0.999")
	err := Hotplug(ctx, xs, Online, "vif7.0", be, gw4, gw6, fw)
	if err == nil || !strings.Contains(err.Error(), "10.137.0.999") {
		t.Errorf("bad address in the ip key: %v", err)
	}
	if err := Hotplug(ctx, xs, "bogus", "vif7.0", be, gw4, gw6, fw); !errors.Is(err, ErrUnknownAction) {
		t.Errorf("unknown action: %v", err)
	}
}
