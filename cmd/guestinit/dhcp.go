package main

import (
	"context"
	"fmt"
	"strings"
	"time"

	"github.com/qvm-project/qvm/bootinit"

	"github.com/insomniacslk/dhcp/dhcpv4"
	"github.com/insomniacslk/dhcp/dhcpv4/nclient4"
	"github.com/vishvananda/netlink"
)

// askDHCP is what qvm.dhcp=IFACE asks for: behave like a guest without
// Qubes agents, ask for an address by DHCP on IFACE and print what it was
// offered (address, netmask, router, DNS), without applying it. It
// returns the ACK.
func askDHCP(ctx context.Context, ifname string) (*dhcpv4.DHCPv4, error) {
	ctx, cancel := context.WithTimeout(ctx, 4*time.Minute)
	defer cancel()
	// The Debian kernel has the PV network frontend as a module.
	if err := bootinit.LoadModules([]bootinit.Module{{Name: "xen-netfront"}}); err != nil {
		return nil, err
	}
	var link netlink.Link
	var err error
	for link == nil {
		if link, err = netlink.LinkByName(ifname); err != nil {
			select {
			case <-ctx.Done():
				return nil, fmt.Errorf("interface %s: %w", ifname, err)
			case <-time.After(200 * time.Millisecond):
			}
		}
	}
	if err := netlink.LinkSetUp(link); err != nil {
		return nil, fmt.Errorf("interface %s up: %w", ifname, err)
	}
	c, err := nclient4.New(ifname, nclient4.WithTimeout(10*time.Second), nclient4.WithRetry(20))
	if err != nil {
		return nil, fmt.Errorf("dhcp client on %s: %w", ifname, err)
	}
	defer c.Close()
	lease, err := c.Request(ctx)
	if err != nil {
		return nil, fmt.Errorf("dhcp on %s: %w", ifname, err)
	}
	ack := lease.ACK
	var dns []string
	for _, d := range ack.DNS() {
		dns = append(dns, d.String())
	}
	var routers []string
	for _, r := range ack.Router() {
		routers = append(routers, r.String())
	}
	say("dhcp ip=%s netmask=%s router=%s dns=%s server=%s", ack.YourIPAddr, netmaskText(ack), strings.Join(routers, ","), strings.Join(dns, ","), ack.ServerIdentifier())
	return ack, nil
}

func netmaskText(m *dhcpv4.DHCPv4) string {
	mask := m.SubnetMask()
	if mask == nil {
		return ""
	}
	return fmt.Sprintf("%d.%d.%d.%d", mask[0], mask[1], mask[2], mask[3])
}
