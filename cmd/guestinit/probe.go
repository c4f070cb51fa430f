package main

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"strings"
	"syscall"
	"time"

	"github.com/insomniacslk/dhcp/dhcpv4"
	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"
)

// A probe is one thing qvm.probe asks the guest to try on the network, as
// a hostile guest would, to show what its network backend lets through:
//
//	tcp:HOST:PORT       connect (reported: connected, refused, timeout or the error)
//	udp:HOST:PORT       send datagrams from the guest's own address (sent or the error)
//	udp:SRC>HOST:PORT   send datagrams with the forged source address SRC
type probe struct {
	proto string         // "tcp" or "udp"
	src   netip.Addr     // forged source; invalid for the guest's own
	dst   netip.AddrPort // where to
	text  string         // as given, for the report
}

// parseProbes reads qvm.probe's comma-separated list.
func parseProbes(list string) ([]probe, error) {
	var out []probe
	for _, item := range strings.Split(list, ",") {
		p := probe{text: item}
		proto, rest, ok := strings.Cut(item, ":")
		if !ok || proto != "tcp" && proto != "udp" {
			return nil, fmt.Errorf("probe %q: want tcp:HOST:PORT, udp:HOST:PORT or udp:SRC>HOST:PORT", item)
		}
		p.proto = proto
		if src, dst, forged := strings.Cut(rest, ">"); forged {
			if proto != "udp" {
				return nil, fmt.Errorf("probe %q: only udp probes forge their source", item)
			}
			a, err := netip.ParseAddr(src)
			if err != nil {
				return nil, fmt.Errorf("probe %q: source: %w", item, err)
			}
			p.src, rest = a, dst
		}
		ap, err := netip.ParseAddrPort(rest)
		if err != nil {
			return nil, fmt.Errorf("probe %q: %w", item, err)
		}
		p.dst = ap
		out = append(out, p)
	}
	return out, nil
}

// applyLease configures ifname as a Qubes VM's network is: the leased
// address as a /32, an on-link route to the gateway and the default route
// through it.
func applyLease(ifname string, ack *dhcpv4.DHCPv4) error {
	link, err := netlink.LinkByName(ifname)
	if err != nil {
		return fmt.Errorf("interface %s: %w", ifname, err)
	}
	routers := ack.Router()
	if len(routers) == 0 {
		return fmt.Errorf("the lease on %s names no router", ifname)
	}
	gw := routers[0]
	if err := netlink.AddrReplace(link, &netlink.Addr{IPNet: &net.IPNet{IP: ack.YourIPAddr, Mask: net.CIDRMask(32, 32)}}); err != nil {
		return fmt.Errorf("address %s on %s: %w", ack.YourIPAddr, ifname, err)
	}
	idx := link.Attrs().Index
	if err := netlink.RouteReplace(&netlink.Route{LinkIndex: idx, Dst: &net.IPNet{IP: gw, Mask: net.CIDRMask(32, 32)}, Scope: netlink.SCOPE_LINK}); err != nil {
		return fmt.Errorf("route to %s on %s: %w", gw, ifname, err)
	}
	if err := netlink.RouteReplace(&netlink.Route{LinkIndex: idx, Gw: gw}); err != nil {
		return fmt.Errorf("default route via %s: %w", gw, err)
	}
	say("network %s ip=%s gateway=%s", ifname, ack.YourIPAddr, gw)
	return nil
}

// probeNetwork is what qvm.probe=LIST asks for: configure ifname from the
// lease, then try each probe in turn and print one line for each:
// "probe ITEM RESULT".
func probeNetwork(ctx context.Context, ifname string, ack *dhcpv4.DHCPv4, list string) error {
	probes, err := parseProbes(list)
	if err != nil {
		return err
	}
	if err := applyLease(ifname, ack); err != nil {
		return err
	}
	for _, p := range probes {
		say("probe %s %s", p.text, p.run(ctx))
	}
	return nil
}

func (p probe) run(ctx context.Context) string {
	if p.proto == "tcp" {
		ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
		defer cancel()
		var d net.Dialer
		c, err := d.DialContext(ctx, "tcp", p.dst.String())
		switch {
		case err == nil:
			c.Close()
			return "connected"
		case errors.Is(err, syscall.ECONNREFUSED):
			return "refused"
		case errors.Is(err, context.DeadlineExceeded) || os.IsTimeout(err):
			return "timeout"
		default:
			return "error " + err.Error()
		}
	}
	d := net.Dialer{}
	if p.src.IsValid() {
		// A transparent socket may send from an address the guest does
		// not have: the forgery a filter must stop.
		d.LocalAddr = net.UDPAddrFromAddrPort(netip.AddrPortFrom(p.src, 0))
		d.Control = func(_, _ string, c syscall.RawConn) error {
			var serr error
			if err := c.Control(func(fd uintptr) {
				serr = unix.SetsockoptInt(int(fd), unix.SOL_IP, unix.IP_TRANSPARENT, 1)
			}); err != nil {
				return err
			}
			return serr
		}
	}
	c, err := d.DialContext(ctx, "udp", p.dst.String())
	if err != nil {
		return "error " + err.Error()
	}
	defer c.Close()
	// A few, spaced: the first may wait for the gateway's ARP answer.
	for i := range 3 {
		if _, err := c.Write([]byte("qvm-probe")); err != nil {
			return "error " + err.Error()
		}
		if i < 2 {
			time.Sleep(200 * time.Millisecond)
		}
	}
	return "sent"
}
