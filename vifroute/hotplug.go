package vifroute

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"strings"
	"syscall"

	"github.com/qvm-project/qvm/vmfirewall"
	"github.com/qvm-project/qvm/xenstore"
)

// Action is a hotplug step libxl asks of a vif script.
type Action string

// The actions libxl runs a vif hotplug script with.
const (
	Online  Action = "online"
	Add     Action = "add"
	Offline Action = "offline"
	Remove  Action = "remove"
)

// ErrUnknownAction is returned (wrapped) for an action Hotplug does not know.
var ErrUnknownAction = errors.New("unknown hotplug action")

// Up reports whether the action brings an interface up (online, add);
// false is offline, remove. Unknown actions are an error.
func (a Action) Up() (bool, error) {
	switch a {
	case Online, Add:
		return true, nil
	case Offline, Remove:
		return false, nil
	}
	return false, fmt.Errorf("%w %q: want online, add, offline or remove", ErrUnknownAction, a)
}

// BackendAddrs reads the VM's addresses from the backend directory's "ip"
// key, which libxl writes from dom0's configuration (the guest cannot
// write there).
func BackendAddrs(ctx context.Context, xs *xenstore.Client, ifname, backend string) ([]netip.Addr, error) {
	ips, err := xs.ReadString(ctx, backend+"/ip")
	if err != nil {
		return nil, fmt.Errorf("%s: the VM's addresses: %w", ifname, err)
	}
	var addrs []netip.Addr
	for _, f := range strings.Fields(ips) {
		addr, err := netip.ParseAddr(f)
		if err != nil {
			return nil, fmt.Errorf("%s: address %q in %s/ip: %w", ifname, f, backend, err)
		}
		addrs = append(addrs, addr)
	}
	return addrs, nil
}

// Hotplug is dom0's part of libxl's hotplug step for a VM interface dom0
// serves. On online/add it first filters the interface (fw.Add: the VM
// may send only from its own addresses and cannot reach dom0 or other
// VMs), then routes the VM's addresses to it (see Up) and tells libxl the
// device is connected; a failure leaves the device unconnected, so the
// VM does not start with an unfiltered interface. On offline/remove it
// undoes both. The addresses come from the backend directory's "ip" key
// (BackendAddrs); gateways are dom0's addresses towards its VMs (the IPv6
// one is used only when the VM has an IPv6 address).
func Hotplug(ctx context.Context, xs *xenstore.Client, action Action, ifname, backend string, gw4, gw6 netip.Addr, fw vmfirewall.Filter) error {
	up, err := action.Up()
	if err != nil {
		return err
	}
	addrs, err := BackendAddrs(ctx, xs, ifname, backend)
	if err != nil {
		if !up {
			// The filter needs only the name; the routes go with the
			// interface. A backend directory already gone (the domain
			// was destroyed meanwhile) is no error: the interface went
			// with it.
			if errors.Is(err, syscall.ENOENT) {
				return fw.Remove(ctx, ifname)
			}
			return errors.Join(err, fw.Remove(ctx, ifname))
		}
		return err
	}
	cfg := Config{Interface: ifname, VMAddrs: addrs, Gateways: []netip.Addr{gw4}}
	for _, a := range addrs {
		if a.Is6() {
			cfg.Gateways = append(cfg.Gateways, gw6)
			break
		}
	}
	if !up {
		return errors.Join(Down(cfg), fw.Remove(ctx, ifname))
	}
	if err := fw.Add(ctx, vmfirewall.Vif{Interface: ifname, Addrs: addrs}); err != nil {
		return err
	}
	if err := Up(cfg); err != nil {
		return err
	}
	return xs.WriteString(ctx, backend+"/hotplug-status", "connected")
}
