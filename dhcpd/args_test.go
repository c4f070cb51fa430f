package dhcpd

import (
	"net"
	"reflect"
	"strings"
	"testing"
	"time"
)

// TestConfigArgsRoundTrip: what Args writes, FlagSet reads back unchanged.
func TestConfigArgsRoundTrip(t *testing.T) {
	mac, _ := net.ParseMAC("00:16:3e:5e:6c:05")
	cases := []Config{
		{Interface: "vif3.0", Lease: Lease{MAC: mac, IP: net.IPv4(10, 137, 0, 5).To4(), Gateway: net.IPv4(10, 137, 255, 254).To4(),
			Netmask: net.CIDRMask(32, 32), DNS: []net.IP{net.IPv4(10, 139, 1, 1).To4(), net.IPv4(10, 139, 1, 2).To4()},
			Duration: DefaultLeaseDuration}},
		{Interface: "br0", ServerIP: net.IPv4(10, 137, 0, 1).To4(), Lease: Lease{MAC: mac, IP: net.IPv4(10, 137, 0, 9).To4(),
			Gateway: net.IPv4(10, 137, 0, 1).To4(), Netmask: net.CIDRMask(24, 32), Hostname: "work", Duration: 2 * time.Hour}, DieWithParent: true},
	}
	for _, c := range cases {
		f := NewFlagSet("test")
		if err := f.Parse(c.Args()); err != nil {
			t.Fatalf("parse %q: %v", c.Args(), err)
		}
		got, err := f.Config()
		if err != nil {
			t.Fatalf("config of %q: %v", c.Args(), err)
		}
		if !reflect.DeepEqual(got, c) {
			t.Errorf("round trip of %q:\n got %+v\nwant %+v", c.Args(), got, c)
		}
	}
}

// TestFlagSetErrors: each bad option is named in the error.
func TestFlagSetErrors(t *testing.T) {
	base := []string{"--interface", "vif1.0", "--mac", "00:16:3e:5e:6c:05", "--ip", "10.137.0.5", "--gateway", "10.137.0.1"}
	cases := []struct {
		args []string
		want string
	}{
		{base[:6], "--gateway is required"},
		{append(base[:0:0], append(base, "--mac", "zz")...), "--mac"},
		{append(base[:0:0], append(base, "--netmask", "255.0.255.0")...), "--netmask"},
		{append(base[:0:0], append(base, "--dns", "10.139.1.1,x")...), "--dns"},
		{append(base[:0:0], append(base, "--hostname", "-bad")...), "--hostname"},
		{append(base[:0:0], append(base, "extra")...), "unexpected argument"},
	}
	for _, c := range cases {
		f := NewFlagSet("test")
		err := f.Parse(c.args)
		if err == nil {
			_, err = f.Config()
		}
		if err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%q: error %v, want one saying %q", c.args, err, c.want)
		}
	}
}
