package main

import (
	"context"
	"fmt"
	"log/slog"
	"net"
	"os"
	"time"

	"github.com/vishvananda/netlink"

	"github.com/qvm-project/qvm/stubdom/dmargs"
)

// The stubdomain's network: its netfront and QEMU's tap on one bridge.
const (
	bridgeName = "br0"
	uplinkName = "eth0"
	// uplinkWait bounds the wait for the netfront device to appear after
	// its module is loaded (the backend connects asynchronously).
	uplinkWait = 20 * time.Second
)

// MACs of the stubdomain's own ends, as Qubes uses them: neither may be
// the guest's, or the bridge would take the guest's frames for its own.
var (
	uplinkMAC = net.HardwareAddr{0xfe, 0xff, 0xff, 0xff, 0xff, 0xfe}
	tapMAC    = net.HardwareAddr{0xfe, 0xff, 0xff, 0xff, 0xff, 0xfd}
)

// setupNetwork makes br0 with the netfront eth0 and, for each of the
// guest's NICs, the tap device QEMU will attach to: made here, persistent
// (netlink closes its own descriptors), so it is on the bridge before QEMU
// opens it again by name and before the guest sends anything.
func setupNetwork(ctx context.Context, log *slog.Logger, nics []dmargs.NIC) error {
	uplink, err := waitLink(ctx, uplinkName, uplinkWait)
	if err != nil {
		return fmt.Errorf("the guest has a NIC but the stubdomain has no %s (netfront): %w", uplinkName, err)
	}
	if err := netlink.LinkSetHardwareAddr(uplink, uplinkMAC); err != nil {
		return fmt.Errorf("set the MAC of %s: %w", uplinkName, err)
	}
	br := &netlink.Bridge{LinkAttrs: netlink.LinkAttrs{Name: bridgeName}}
	if err := netlink.LinkAdd(br); err != nil {
		return fmt.Errorf("create bridge %s: %w", bridgeName, err)
	}
	// No spanning tree and no forwarding delay: frames pass at once.
	if err := os.WriteFile("/sys/class/net/"+bridgeName+"/bridge/forward_delay", []byte("0"), 0o644); err != nil {
		return fmt.Errorf("bridge %s: %w", bridgeName, err)
	}
	if err := netlink.LinkSetMaster(uplink, br); err != nil {
		return fmt.Errorf("add %s to %s: %w", uplinkName, bridgeName, err)
	}
	if err := netlink.LinkSetUp(uplink); err != nil {
		return fmt.Errorf("bring up %s: %w", uplinkName, err)
	}
	for _, n := range nics {
		tap := &netlink.Tuntap{
			LinkAttrs: netlink.LinkAttrs{Name: n.Ifname},
			Mode:      netlink.TUNTAP_MODE_TAP,
			Flags:     netlink.TUNTAP_NO_PI | netlink.TUNTAP_VNET_HDR,
		}
		if err := netlink.LinkAdd(tap); err != nil {
			return fmt.Errorf("create tap %s for NIC %s: %w", n.Ifname, n.Device, err)
		}
		if err := netlink.LinkSetHardwareAddr(tap, tapMAC); err != nil {
			return fmt.Errorf("set the MAC of %s: %w", n.Ifname, err)
		}
		if err := netlink.LinkSetMaster(tap, br); err != nil {
			return fmt.Errorf("add %s to %s: %w", n.Ifname, bridgeName, err)
		}
		if err := netlink.LinkSetUp(tap); err != nil {
			return fmt.Errorf("bring up %s: %w", n.Ifname, err)
		}
		log.Info("NIC bridged", "nic", n.Device, "model", n.Model, "mac", n.MAC.String(), "tap", n.Ifname, "bridge", bridgeName)
	}
	if err := netlink.LinkSetUp(br); err != nil {
		return fmt.Errorf("bring up %s: %w", bridgeName, err)
	}
	return nil
}

// waitLink waits for a network device to appear.
func waitLink(ctx context.Context, name string, limit time.Duration) (netlink.Link, error) {
	deadline := time.Now().Add(limit)
	for {
		l, err := netlink.LinkByName(name)
		if err == nil {
			return l, nil
		}
		if time.Now().After(deadline) {
			return nil, fmt.Errorf("%s did not appear in %s: %w", name, limit, err)
		}
		select {
		case <-ctx.Done():
			return nil, ctx.Err()
		case <-time.After(50 * time.Millisecond):
		}
	}
}
