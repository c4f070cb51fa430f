package vm

import (
	"fmt"
	"net/netip"
	"regexp"
	"strings"
)

// Addresses and names of the Qubes network scheme.
const (
	// VisibleNetmask is the netmask a networked VM sees: a /32, its gateway
	// is reached by an on-link route.
	VisibleNetmask = "255.255.255.255"
	// PrimaryDNS and SecondaryDNS are the virtual DNS servers the netvm
	// forwards.
	PrimaryDNS   = "10.139.1.1"
	SecondaryDNS = "10.139.1.2"
	// Dom0Gateway is dom0's address towards the VMs it serves as network
	// backend (qvm: dom0 can be a netvm in a single-host setup). No qid
	// derives it: qids stop at 9999 = 10.137.39.15.
	Dom0Gateway  = "10.137.255.254"
	Dom0Gateway6 = "fd09:24ef:4179::a89:fffe"
	// ip6Prefix holds the IPv6 addresses; the last 32 bits mirror the IPv4.
	ip6Prefix = "fd09:24ef:4179::"
)

// DerivedIP is the IPv4 address Qubes gives a VM from its qid
// (DispVMs: from their dispid, in 10.138/16).
func DerivedIP(qid int, disp bool) string {
	second := 137
	if disp {
		second = 138
	}
	return fmt.Sprintf("10.%d.%d.%d", second, (qid>>8)&0xff, qid&0xff)
}

// DerivedIP6 is the IPv6 address Qubes gives a VM from its qid or dispid.
func DerivedIP6(qid int, disp bool) string {
	hi := "a89"
	if disp {
		hi = "a8a"
	}
	return fmt.Sprintf("%s%s:%x", ip6Prefix, hi, qid&0xffff)
}

// DerivedMAC is qvm's per-VM default MAC: 00:16:3e:5e:XX:YY with
// XXYY = 0x6c00 + qid, so that no two VMs on one bridge share a MAC
// (Qubes gives every VM 00:16:3e:5e:6c:00).
func DerivedMAC(qid int) string {
	n := 0x6c00 + qid
	return fmt.Sprintf("00:16:3e:5e:%02x:%02x", (n>>8)&0xff, n&0xff)
}

var macRE = regexp.MustCompile(`\A([0-9a-f][0-9a-f]:){5}[0-9a-f][0-9a-f]\z`)

// ParseMAC validates a MAC address and returns it in lower case.
func ParseMAC(s string) (string, error) {
	m := strings.ToLower(strings.TrimSpace(s))
	if !macRE.MatchString(m) {
		return "", fmt.Errorf("invalid MAC address %q: use six hex pairs separated by ':', e.g. 00:16:3e:5e:6c:05", s)
	}
	var first byte
	fmt.Sscanf(m[:2], "%02x", &first)
	if first&1 != 0 {
		return "", fmt.Errorf("MAC address %q is a multicast address (lowest bit of the first byte set): use a unicast one such as 00:16:3e:5e:6c:05", s)
	}
	return m, nil
}

// ParseIPv4 validates a VM's IPv4 address.
func ParseIPv4(s string) (string, error) {
	a, err := netip.ParseAddr(strings.TrimSpace(s))
	if err != nil || !a.Is4() {
		return "", fmt.Errorf("invalid IPv4 address %q: use dotted quads, e.g. 10.137.0.5", s)
	}
	if a.IsUnspecified() || a.IsMulticast() || a.IsLoopback() || a == netip.AddrFrom4([4]byte{255, 255, 255, 255}) {
		return "", fmt.Errorf("IPv4 address %q cannot be a VM's address (unspecified, loopback, multicast or broadcast)", s)
	}
	return a.String(), nil
}

// ParseIPv6 validates a VM's IPv6 address.
func ParseIPv6(s string) (string, error) {
	a, err := netip.ParseAddr(strings.TrimSpace(s))
	if err != nil || !a.Is6() || a.Is4In6() {
		return "", fmt.Errorf("invalid IPv6 address %q: e.g. fd09:24ef:4179::a89:7a", s)
	}
	if a.IsUnspecified() || a.IsMulticast() || a.IsLoopback() {
		return "", fmt.Errorf("IPv6 address %q cannot be a VM's address", s)
	}
	return a.String(), nil
}

// addressOf is the IPv4 address a VM holds or would hold once networked:
// no two VMs may share it.
func addressOf(d *Definition) string {
	if ip, ok := d.Props["ip"]; ok {
		return ip
	}
	if d.Class == AdminVM {
		return Dom0Gateway
	}
	if d.Class == DispVM {
		return DerivedIP(d.DispID, true)
	}
	return DerivedIP(d.QID, false)
}
