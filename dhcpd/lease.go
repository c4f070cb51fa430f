package dhcpd

import (
	"errors"
	"fmt"
	"math"
	"net"
	"strings"
	"time"

	"github.com/insomniacslk/dhcp/dhcpv4"
)

// DefaultLeaseDuration is the lease time given when a Lease has none. The
// address never changes, so a long lease only saves traffic.
const DefaultLeaseDuration = 24 * time.Hour

// maxLeaseDuration is the longest finite lease option 51 can express;
// 0xffffffff itself means "infinite", which would stop clients renewing.
const maxLeaseDuration = (math.MaxUint32 - 1) * time.Second

// Lease is the fixed configuration handed to the client with one MAC address.
type Lease struct {
	MAC      net.HardwareAddr // the client's Ethernet address (6 bytes)
	IP       net.IP           // the client's IPv4 address
	Netmask  net.IPMask       // usually 255.255.255.255 (Qubes' visible_netmask)
	Gateway  net.IP           // the router; may lie outside IP/Netmask
	DNS      []net.IP         // DNS servers, in order (Qubes: 10.139.1.1, 10.139.1.2)
	Duration time.Duration    // lease time; zero means DefaultLeaseDuration
	Hostname string           // optional host name (option 12); empty: none
}

// String names the lease for logs: MAC and address.
func (l Lease) String() string {
	return fmt.Sprintf("%s=%s", l.MAC, l.IP)
}

// entry is a validated lease with the reply options that never change.
type entry struct {
	lease    Lease
	ip       [4]byte
	options  dhcpv4.Options // options every OFFER/ACK carries (not INFORM's lease times)
	times    dhcpv4.Options // lease time, T1 and T2 (OFFER and ACK only)
	routes   []byte         // option 121/249 payload, sent when asked for
	duration time.Duration
}

// macKey is the map key for a 6-byte Ethernet address.
type macKey [6]byte

func keyOf(mac net.HardwareAddr) (macKey, bool) {
	var k macKey
	if len(mac) != len(k) {
		return k, false
	}
	copy(k[:], mac)
	return k, true
}

// ipv4 returns ip as 4 bytes, or nil when it is not an IPv4 address.
func ipv4(ip net.IP) net.IP {
	if ip == nil {
		return nil
	}
	return ip.To4()
}

// newEntry checks a lease and precomputes what its replies carry.
func newEntry(l Lease) (*entry, error) {
	if len(l.MAC) != 6 {
		return nil, fmt.Errorf("lease %v: MAC %q is not a 6-byte Ethernet address", l.IP, l.MAC)
	}
	if l.MAC[0]&1 != 0 {
		return nil, fmt.Errorf("lease for %s: MAC is a multicast address; give the VM's unicast MAC", l.MAC)
	}
	ip := ipv4(l.IP)
	if ip == nil || ip.IsUnspecified() || ip.Equal(net.IPv4bcast) || ip.IsMulticast() || ip.IsLoopback() {
		return nil, fmt.Errorf("lease for %s: IP %v is not a usable IPv4 host address", l.MAC, l.IP)
	}
	if len(l.Netmask) != net.IPv4len {
		return nil, fmt.Errorf("lease for %s: netmask %v is not an IPv4 netmask (e.g. 255.255.255.255)", l.MAC, l.Netmask)
	}
	if ones, bits := l.Netmask.Size(); bits != 32 || ones == 0 {
		return nil, fmt.Errorf("lease for %s: netmask %v is not a contiguous IPv4 netmask of at least /1", l.MAC, net.IP(l.Netmask))
	}
	gw := ipv4(l.Gateway)
	if gw == nil || gw.IsUnspecified() || gw.Equal(net.IPv4bcast) || gw.IsMulticast() {
		return nil, fmt.Errorf("lease for %s: gateway %v is not a usable IPv4 address", l.MAC, l.Gateway)
	}
	if gw.Equal(ip) {
		return nil, fmt.Errorf("lease for %s: gateway %v equals the client's own address", l.MAC, gw)
	}
	dns := make([]net.IP, 0, len(l.DNS))
	for _, d := range l.DNS {
		d4 := ipv4(d)
		if d4 == nil || d4.IsUnspecified() {
			return nil, fmt.Errorf("lease for %s: DNS server %v is not an IPv4 address", l.MAC, d)
		}
		dns = append(dns, d4)
	}
	if len(dns) > 16 {
		return nil, fmt.Errorf("lease for %s: %d DNS servers, at most 16 fit", l.MAC, len(dns))
	}
	d := l.Duration
	if d == 0 {
		d = DefaultLeaseDuration
	}
	if d < 10*time.Second || d > maxLeaseDuration {
		return nil, fmt.Errorf("lease for %s: duration %v is outside 10s..%v", l.MAC, l.Duration, maxLeaseDuration)
	}
	if err := checkHostname(l.Hostname); err != nil {
		return nil, fmt.Errorf("lease for %s: %w", l.MAC, err)
	}

	opts := dhcpv4.Options{}
	opts.Update(dhcpv4.OptSubnetMask(l.Netmask))
	opts.Update(dhcpv4.OptRouter(gw))
	if len(dns) > 0 {
		opts.Update(dhcpv4.OptDNS(dns...))
	}
	if l.Hostname != "" {
		opts.Update(dhcpv4.OptHostName(l.Hostname))
	}
	routes := dhcpv4.Routes{
		// The gateway is on the link even when it is outside IP/Netmask:
		// a route with router 0.0.0.0 is on-link (RFC 3442).
		{Dest: &net.IPNet{IP: gw, Mask: net.CIDRMask(32, 32)}, Router: net.IPv4zero.To4()},
		{Dest: &net.IPNet{IP: net.IPv4zero.To4(), Mask: net.CIDRMask(0, 32)}, Router: gw},
	}
	times := dhcpv4.Options{}
	times.Update(dhcpv4.OptIPAddressLeaseTime(d))
	times.Update(dhcpv4.OptRenewTimeValue(d / 2))
	times.Update(dhcpv4.OptRebindingTimeValue(d * 7 / 8))
	e := &entry{
		lease:    l,
		options:  opts,
		times:    times,
		routes:   routes.ToBytes(),
		duration: d,
	}
	copy(e.ip[:], ip)
	e.lease.IP, e.lease.Gateway, e.lease.DNS, e.lease.Duration = ip, gw, dns, d
	return e, nil
}

// checkHostname accepts an empty name or one DNS label-style host name.
func checkHostname(h string) error {
	if h == "" {
		return nil
	}
	if len(h) > 63 {
		return fmt.Errorf("hostname %q is longer than 63 characters", h)
	}
	for _, r := range h {
		if !(r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' || r == '-' || r == '.' || r == '_') {
			return fmt.Errorf("hostname %q has character %q; use letters, digits, '-', '_', '.'", h, r)
		}
	}
	if strings.HasPrefix(h, "-") || strings.HasPrefix(h, ".") {
		return fmt.Errorf("hostname %q must start with a letter or digit", h)
	}
	return nil
}

// ParseMAC parses an Ethernet address (aa:bb:cc:dd:ee:ff) for a Lease.
func ParseMAC(s string) (net.HardwareAddr, error) {
	mac, err := net.ParseMAC(s)
	if err != nil {
		return nil, fmt.Errorf("MAC %q: %w", s, err)
	}
	if len(mac) != 6 {
		return nil, fmt.Errorf("MAC %q: not a 6-byte Ethernet address", s)
	}
	return mac, nil
}

// ParseIPv4 parses a dotted-quad IPv4 address; what names the value in the error.
func ParseIPv4(what, s string) (net.IP, error) {
	ip := net.ParseIP(strings.TrimSpace(s))
	if ip == nil || ip.To4() == nil {
		return nil, fmt.Errorf("%s %q is not an IPv4 address like 10.137.0.5", what, s)
	}
	return ip.To4(), nil
}

// ParseNetmask parses a dotted-quad netmask (255.255.255.255) or a prefix
// length (/32 or 32).
func ParseNetmask(s string) (net.IPMask, error) {
	s = strings.TrimSpace(s)
	if p, ok := strings.CutPrefix(s, "/"); ok || !strings.Contains(s, ".") {
		var n int
		if _, err := fmt.Sscanf(p, "%d", &n); err != nil || n < 1 || n > 32 || fmt.Sprint(n) != p {
			return nil, fmt.Errorf("netmask %q: prefix length must be 1..32", s)
		}
		return net.CIDRMask(n, 32), nil
	}
	ip := net.ParseIP(s).To4()
	if ip == nil {
		return nil, fmt.Errorf("netmask %q is not like 255.255.255.255", s)
	}
	m := net.IPMask(ip)
	if ones, bits := m.Size(); bits != 32 || ones == 0 {
		return nil, fmt.Errorf("netmask %q is not contiguous", s)
	}
	return m, nil
}

// ParseIPv4List parses comma-separated IPv4 addresses ("10.139.1.1,10.139.1.2").
// An empty string gives an empty list.
func ParseIPv4List(what, s string) ([]net.IP, error) {
	if strings.TrimSpace(s) == "" {
		return nil, nil
	}
	var out []net.IP
	for _, part := range strings.Split(s, ",") {
		ip, err := ParseIPv4(what, part)
		if err != nil {
			return nil, err
		}
		out = append(out, ip)
	}
	return out, nil
}

var errNoLeases = errors.New("no leases given: the server would answer nobody")
