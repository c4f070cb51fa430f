package main

import (
	"net/netip"
	"strings"
	"testing"
)

func TestParseProbes(t *testing.T) {
	got, err := parseProbes("tcp:10.137.255.254:7777,udp:10.200.0.2:7,udp:10.137.0.9>10.200.0.2:7")
	if err != nil {
		t.Fatal(err)
	}
	want := []probe{
		{proto: "tcp", dst: netip.MustParseAddrPort("10.137.255.254:7777"), text: "tcp:10.137.255.254:7777"},
		{proto: "udp", dst: netip.MustParseAddrPort("10.200.0.2:7"), text: "udp:10.200.0.2:7"},
		{proto: "udp", src: netip.MustParseAddr("10.137.0.9"), dst: netip.MustParseAddrPort("10.200.0.2:7"), text: "udp:10.137.0.9>10.200.0.2:7"},
	}
	if len(got) != len(want) {
		t.Fatalf("got %+v", got)
	}
	for i := range want {
		if got[i] != want[i] {
			t.Errorf("probe %d: %+v, want %+v", i, got[i], want[i])
		}
	}
	for _, bad := range []string{"", "icmp:1.2.3.4:1", "tcp:1.2.3.4", "tcp:1.2.3.4>5.6.7.8:9", "udp:x>1.2.3.4:5", "udp:1.2.3.4:99999"} {
		if _, err := parseProbes(bad); err == nil || !strings.Contains(err.Error(), "probe") {
			t.Errorf("parseProbes(%q): %v", bad, err)
		}
	}
}
