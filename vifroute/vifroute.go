// Package vifroute sets up dom0's end of a VM's network interface for
// routed networking, as Qubes' vif-route-qubes does in a netvm: the
// backend interface carries the gateway address the VM was told (a /32),
// a host route sends the VM's address to the interface, and proxy ARP and
// forwarding let the VM reach the gateway on-link. No bridge.
package vifroute

import (
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"path/filepath"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"
)

// Config is one VM interface's routing.
type Config struct {
	// Interface is the backend interface in this domain, e.g. vif5.0.
	Interface string
	// VMAddrs are the VM's addresses (IPv4 and IPv6).
	VMAddrs []netip.Addr
	// Gateways are the addresses the VM uses as gateway (IPv4, IPv6).
	Gateways []netip.Addr
}

// Up brings the interface up with the gateway addresses and routes the
// VM's addresses to it. It can be run again: it replaces, never adds twice.
func Up(c Config) error {
	link, err := netlink.LinkByName(c.Interface)
	if err != nil {
		return fmt.Errorf("interface %s: %w", c.Interface, err)
	}
	if err := sysctls(c.Interface, c.VMAddrs); err != nil {
		return err
	}
	for _, gw := range c.Gateways {
		addr := &netlink.Addr{IPNet: hostNet(gw), Scope: unix.RT_SCOPE_LINK}
		if gw.Is6() {
			addr.Flags = unix.IFA_F_NODAD
		}
		if err := netlink.AddrReplace(link, addr); err != nil {
			return fmt.Errorf("interface %s: add gateway address %s: %w", c.Interface, gw, err)
		}
	}
	if err := netlink.LinkSetUp(link); err != nil {
		return fmt.Errorf("interface %s: set up: %w", c.Interface, err)
	}
	for _, a := range c.VMAddrs {
		r := &netlink.Route{LinkIndex: link.Attrs().Index, Dst: hostNet(a), Scope: unix.RT_SCOPE_LINK}
		if err := netlink.RouteReplace(r); err != nil {
			return fmt.Errorf("interface %s: route %s: %w", c.Interface, a, err)
		}
	}
	return nil
}

// Down removes the VM's routes. The interface itself goes with the domain.
func Down(c Config) error {
	link, err := netlink.LinkByName(c.Interface)
	if err != nil {
		var nf netlink.LinkNotFoundError
		if errors.As(err, &nf) {
			return nil
		}
		return fmt.Errorf("interface %s: %w", c.Interface, err)
	}
	var errs []error
	for _, a := range c.VMAddrs {
		r := &netlink.Route{LinkIndex: link.Attrs().Index, Dst: hostNet(a), Scope: unix.RT_SCOPE_LINK}
		if err := netlink.RouteDel(r); err != nil && !errors.Is(err, unix.ESRCH) {
			errs = append(errs, fmt.Errorf("interface %s: remove route %s: %w", c.Interface, a, err))
		}
	}
	return errors.Join(errs...)
}

func hostNet(a netip.Addr) *net.IPNet {
	bits := 32
	if a.Is6() {
		bits = 128
	}
	return &net.IPNet{IP: net.IP(a.AsSlice()), Mask: net.CIDRMask(bits, bits)}
}

// sysctls turn on forwarding and proxy ARP (NDP) for the interface.
func sysctls(ifname string, addrs []netip.Addr) error {
	set := func(path string) error {
		if err := os.WriteFile(path, []byte("1"), 0o644); err != nil {
			return fmt.Errorf("interface %s: %w", ifname, err)
		}
		return nil
	}
	v4 := filepath.Join("/proc/sys/net/ipv4/conf", ifname)
	for _, k := range []string{"forwarding", "proxy_arp"} {
		if err := set(filepath.Join(v4, k)); err != nil {
			return err
		}
	}
	for _, a := range addrs {
		if a.Is6() {
			v6 := filepath.Join("/proc/sys/net/ipv6/conf", ifname)
			for _, k := range []string{"forwarding", "proxy_ndp"} {
				if err := set(filepath.Join(v6, k)); err != nil {
					return err
				}
			}
			break
		}
	}
	return nil
}
