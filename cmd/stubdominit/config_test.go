package main

import (
	"context"
	"fmt"
	"net"
	"net/netip"
	"reflect"
	"strings"
	"testing"

	"github.com/qvm-project/qvm/stubdom/dmargs"
	"github.com/qvm-project/qvm/xenstore"
	"github.com/qvm-project/qvm/xenstore/xenstoretest"
)

// libxlWrites lays out xenstore as libxl does for guest 5 with stubdomain
// 6 (and dom0 owning everything): the stubdomain's domid and target keys,
// the guest's vm path, and the dm-argv entries readable by the stubdomain.
func libxlWrites(t *testing.T, dom0 *xenstore.Client, argv []string) {
	t.Helper()
	ctx := context.Background()
	const guest, stub = 5, 6
	vm := "/vm/8a7c1c9e-0000-4000-8000-000000000005"
	ro := xenstore.Perms{{Domid: 0, Access: xenstore.AccessNone}, {Domid: stub, Access: xenstore.AccessRead}}
	writes := map[string]string{
		fmt.Sprintf("/local/domain/%d/domid", stub):  fmt.Sprint(stub),
		fmt.Sprintf("/local/domain/%d/target", stub): fmt.Sprint(guest),
		fmt.Sprintf("/local/domain/%d/vm", guest):    vm,
	}
	for k, v := range writes {
		if err := dom0.WriteString(ctx, k, v); err != nil {
			t.Fatal(err)
		}
	}
	for _, p := range []string{fmt.Sprintf("/local/domain/%d", stub), fmt.Sprintf("/local/domain/%d/domid", stub), fmt.Sprintf("/local/domain/%d/target", stub)} {
		if err := dom0.SetPerms(ctx, p, ro); err != nil {
			t.Fatal(err)
		}
	}
	// The guest may read its own vm path; its stubdomain acts with its
	// rights (SET_TARGET).
	if err := dom0.SetPerms(ctx, fmt.Sprintf("/local/domain/%d/vm", guest), xenstore.Perms{{Domid: 0, Access: xenstore.AccessNone}, {Domid: guest, Access: xenstore.AccessRead}}); err != nil {
		t.Fatal(err)
	}
	if err := dom0.Mkdir(ctx, vm+"/image/dm-argv"); err != nil {
		t.Fatal(err)
	}
	if err := dom0.SetPerms(ctx, vm+"/image/dm-argv", ro); err != nil {
		t.Fatal(err)
	}
	for i, a := range argv {
		p := fmt.Sprintf("%s/image/dm-argv/%03d", vm, i+1)
		if err := dom0.WriteString(ctx, p, a); err != nil {
			t.Fatal(err)
		}
		if err := dom0.SetPerms(ctx, p, ro); err != nil {
			t.Fatal(err)
		}
	}
	if err := dom0.SetTarget(ctx, stub, guest); err != nil {
		t.Fatal(err)
	}
}

// TestReadConfig reads the stubdomain's configuration through a real C
// xenstored, as the stubdomain (domain 6): its relative keys, its
// target's vm path, and 1001 arguments in numeric order.
func TestReadConfig(t *testing.T) {
	d := xenstoretest.Start(t)
	var argv []string
	for i := 0; i < 1001; i++ {
		argv = append(argv, fmt.Sprintf("arg-%d", i))
	}
	d.Guest(5) // introduced, as the target must be
	stub := d.Guest(6)
	libxlWrites(t, d.Client(), argv)
	c, err := readConfig(context.Background(), stub)
	if err != nil {
		t.Fatal(err)
	}
	if c.Self != 6 || c.Target != 5 || c.VMPath != "/vm/8a7c1c9e-0000-4000-8000-000000000005" || c.devModelPath() != "/local/domain/6/device-model/5" {
		t.Fatalf("config %+v", c)
	}
	if !reflect.DeepEqual(c.Argv, argv) {
		t.Fatalf("%d arguments, first %q; want %d in order", len(c.Argv), c.Argv[:3], len(argv))
	}
}

// TestReadConfigRefuses: a domain that is not a stubdomain (no target) or
// a target pointing at itself gets a clear error.
func TestReadConfigRefuses(t *testing.T) {
	d := xenstoretest.Start(t)
	ctx := context.Background()
	dom0 := d.Client()
	dom0.WriteString(ctx, "/local/domain/7/domid", "7")
	dom0.SetPerms(ctx, "/local/domain/7", xenstore.Perms{{Domid: 7, Access: xenstore.AccessNone}})
	dom0.SetPerms(ctx, "/local/domain/7/domid", xenstore.Perms{{Domid: 7, Access: xenstore.AccessNone}})
	g := d.Guest(7)
	if _, err := readConfig(ctx, g); err == nil || !strings.Contains(err.Error(), "target") {
		t.Fatalf("no target: %v", err)
	}
	dom0.WriteString(ctx, "/local/domain/7/target", "7")
	dom0.SetPerms(ctx, "/local/domain/7/target", xenstore.Perms{{Domid: 7, Access: xenstore.AccessNone}})
	if _, err := readConfig(ctx, g); err == nil || !strings.Contains(err.Error(), "other than dom0 and itself") {
		t.Fatalf("target is itself: %v", err)
	}
}

// TestDHCPDArgsRoundTrip: the DHCP server process gets exactly the
// guest's MAC and network settings.
func TestDHCPDArgsRoundTrip(t *testing.T) {
	nic := dmargs.NIC{Device: "nic0", MAC: net.HardwareAddr{0, 0x16, 0x3e, 0x5e, 0x6c, 5}, Ifname: "vif5.0-emu"}
	n := dmargs.Net{ClientIP: netip.MustParseAddr("10.137.0.5"), Gateway: netip.MustParseAddr("10.137.0.1"),
		Netmask: net.IPv4Mask(255, 255, 255, 255), DNS: []netip.Addr{netip.MustParseAddr("10.139.1.1"), netip.MustParseAddr("10.139.1.2")}}
	cfg, err := dhcpdParse(dhcpdConfig(nic, n).Args())
	if err != nil {
		t.Fatal(err)
	}
	ifname, l := cfg.Interface, cfg.Lease
	if ifname != bridgeName || l.MAC.String() != "00:16:3e:5e:6c:05" || l.IP.String() != "10.137.0.5" || l.Gateway.String() != "10.137.0.1" ||
		net.IP(l.Netmask).String() != "255.255.255.255" || len(l.DNS) != 2 || l.DNS[1].String() != "10.139.1.2" {
		t.Fatalf("lease %+v on %s", l, ifname)
	}
	n.DNS = nil
	if cfg, err = dhcpdParse(dhcpdConfig(nic, n).Args()); err != nil || len(cfg.Lease.DNS) != 0 {
		t.Fatalf("no DNS: %+v, %v", cfg.Lease, err)
	}
	if cfg.Server().String() != "10.137.0.1" {
		t.Errorf("server identifier %s, want the gateway", cfg.Server())
	}
	for _, bad := range [][]string{{"--interface", "br0", "--mac", "zz", "--ip", "1.2.3.4", "--gateway", "1.2.3.1"}, {"--mac", "00:16:3e:00:00:01"}, {"--interface", "br0", "extra"}} {
		if _, err := dhcpdParse(bad); err == nil {
			t.Errorf("dhcpdParse(%q) accepted", bad)
		}
	}
}
