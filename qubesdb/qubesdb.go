// Package qubesdb computes the QubesDB-like keys a VM reads when it boots
// (its name, class, network settings, services, ...) and publishes them in
// xenstore.
//
// Qubes OS serves these keys from its own QubesDB daemon as "/name",
// "/qubes-ip" and so on. qvm keeps them in xenstore instead, below
// /local/domain/<domid>/qubes/, with the leading "/" dropped
// ("qubes/qubes-ip"). The directory and every key are owned by dom0 and
// readable by that domain alone (permissions n0,r<domid>): the VM cannot
// change them and no other domain can read them. They are written in one
// transaction and removed when the domain goes away.
package qubesdb

import (
	"context"
	"crypto/rand"
	"encoding/base64"
	"errors"
	"fmt"
	"maps"
	"net"
	"net/netip"
	"slices"
	"strconv"
	"syscall"

	"github.com/qvm-project/qvm/xenstore"
)

// Dir is the directory below a domain's home that holds the keys.
const Dir = "qubes"

// RandomSeedSize is the number of random bytes given to each VM.
const RandomSeedSize = 64

// Info is what a VM is told about itself. The caller fills it from the VM's
// properties; this package does not know the VM model.
type Info struct {
	Name         string // the VM's name
	Type         string // its class: AppVM, TemplateVM, StandaloneVM, DispVM, ...
	DefaultUser  string
	BaseTemplate string // template name, "" for a VM without template
	Timezone     string
	Updateable   bool
	Debug        bool
	// RandomSeed is 64 bytes for the guest's entropy pool; nil means
	// fresh bytes from crypto/rand.
	RandomSeed []byte
	// Net is the VM's own network settings, nil when it has no netvm.
	Net *Net
	// NetVM is what the VM offers its clients, nil unless it provides
	// network.
	NetVM *NetVM
	// Services are qvm-service settings: qubes-service/<name> = "1" or "0".
	Services map[string]bool
}

// Net is a networked VM's own settings.
type Net struct {
	MAC, IP, Netmask, Gateway string
	PrimaryDNS, SecondaryDNS  string
	IP6, Gateway6             string // "" without IPv6
}

// NetVM is what a VM that provides network tells its clients.
type NetVM struct {
	Network, Gateway, Netmask string
	PrimaryDNS, SecondaryDNS  string
	Gateway6                  string // "" without IPv6
}

func pyBool(b bool) string {
	if b {
		return "True"
	}
	return "False"
}

func digit(b bool) string {
	if b {
		return "1"
	}
	return "0"
}

// Keys returns the key set for a VM: key (relative to Dir) -> value. The
// keys and values are Qubes': "name", "type", "default-user",
// "qubes-vm-updateable" ("True"/"False"), "qubes-vm-persistence" ("full"
// when updateable, else "rw-only"), "qubes-debug-mode" ("0"/"1"),
// "qubes-base-template", "qubes-random-seed" (base64), "qubes-timezone",
// "qubes-block-devices" and "qubes-usb-devices" (empty); with a netvm
// "qubes-mac", "qubes-ip", "qubes-netmask", "qubes-gateway",
// "qubes-primary-dns", "qubes-secondary-dns" and, with IPv6, "qubes-ip6",
// "qubes-gateway6"; for a netvm "qubes-netvm-network", "-gateway",
// "-netmask", "-primary-dns", "-secondary-dns" and, with IPv6,
// "qubes-netvm-gateway6"; and "qubes-service/<name>" per service.
func Keys(info Info) (map[string]string, error) {
	if info.Name == "" {
		return nil, errors.New("qubesdb: empty VM name")
	}
	if info.Type == "" {
		return nil, fmt.Errorf("qubesdb: VM %s: empty type; give its class (AppVM, TemplateVM, ...)", info.Name)
	}
	seed := info.RandomSeed
	if seed == nil {
		seed = make([]byte, RandomSeedSize)
		if _, err := rand.Read(seed); err != nil {
			return nil, fmt.Errorf("qubesdb: VM %s: random seed: %w", info.Name, err)
		}
	}
	if len(seed) != RandomSeedSize {
		return nil, fmt.Errorf("qubesdb: VM %s: random seed is %d bytes, want %d", info.Name, len(seed), RandomSeedSize)
	}
	persistence := "rw-only"
	if info.Updateable {
		persistence = "full"
	}
	k := map[string]string{
		"name":                 info.Name,
		"type":                 info.Type,
		"default-user":         info.DefaultUser,
		"qubes-vm-updateable":  pyBool(info.Updateable),
		"qubes-vm-persistence": persistence,
		"qubes-debug-mode":     digit(info.Debug),
		"qubes-base-template":  info.BaseTemplate,
		"qubes-random-seed":    base64.StdEncoding.EncodeToString(seed),
		"qubes-timezone":       info.Timezone,
		"qubes-block-devices":  "",
		"qubes-usb-devices":    "",
	}
	if n := info.Net; n != nil {
		if _, err := net.ParseMAC(n.MAC); err != nil {
			return nil, fmt.Errorf("qubesdb: VM %s: MAC %q: %w", info.Name, n.MAC, err)
		}
		addrs := []struct{ key, val string }{
			{"qubes-ip", n.IP}, {"qubes-netmask", n.Netmask}, {"qubes-gateway", n.Gateway},
			{"qubes-primary-dns", n.PrimaryDNS}, {"qubes-secondary-dns", n.SecondaryDNS},
		}
		if n.IP6 != "" || n.Gateway6 != "" {
			addrs = append(addrs, struct{ key, val string }{"qubes-ip6", n.IP6}, struct{ key, val string }{"qubes-gateway6", n.Gateway6})
		}
		k["qubes-mac"] = n.MAC
		for _, a := range addrs {
			if err := checkAddr(info.Name, a.key, a.val); err != nil {
				return nil, err
			}
			k[a.key] = a.val
		}
	}
	if n := info.NetVM; n != nil {
		addrs := []struct{ key, val string }{
			{"qubes-netvm-network", n.Network}, {"qubes-netvm-gateway", n.Gateway},
			{"qubes-netvm-netmask", n.Netmask}, {"qubes-netvm-primary-dns", n.PrimaryDNS},
			{"qubes-netvm-secondary-dns", n.SecondaryDNS},
		}
		if n.Gateway6 != "" {
			addrs = append(addrs, struct{ key, val string }{"qubes-netvm-gateway6", n.Gateway6})
		}
		for _, a := range addrs {
			if err := checkAddr(info.Name, a.key, a.val); err != nil {
				return nil, err
			}
			k[a.key] = a.val
		}
	}
	for name, on := range info.Services {
		if err := checkName("service name", name); err != nil {
			return nil, fmt.Errorf("qubesdb: VM %s: %w", info.Name, err)
		}
		k["qubes-service/"+name] = digit(on)
	}
	return k, nil
}

// checkAddr needs an IP address.
func checkAddr(vm, key, val string) error {
	if _, err := netip.ParseAddr(val); err != nil {
		return fmt.Errorf("qubesdb: VM %s: %s %q is not an IP address", vm, key, val)
	}
	return nil
}

// checkName needs a string that is one xenstore path element: letters,
// digits, '_', '-', '@' (what xenstored accepts, without '/').
func checkName(what, s string) error {
	if s == "" {
		return fmt.Errorf("empty %s", what)
	}
	for _, c := range s {
		ok := c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '_' || c == '-' || c == '@'
		if !ok {
			return fmt.Errorf("%s %q: only letters, digits, '_', '-' and '@' can be stored in xenstore", what, s)
		}
	}
	return nil
}

// checkKey needs a relative path of valid elements.
func checkKey(key string) error {
	if key == "" {
		return errors.New("empty key")
	}
	start := 0
	for i := 0; i <= len(key); i++ {
		if i == len(key) || key[i] == '/' {
			if err := checkName("key element", key[start:i]); err != nil {
				return fmt.Errorf("key %q: %w", key, err)
			}
			start = i + 1
		}
	}
	return nil
}

// Path returns the directory of a domain's keys: /local/domain/<domid>/qubes.
func Path(domid uint32) string {
	return "/local/domain/" + strconv.FormatUint(uint64(domid), 10) + "/" + Dir
}

// Perms returns the permissions of the keys of domain domid: owned by
// dom0, readable by domid, invisible to everyone else.
func Perms(domid uint32) xenstore.Perms {
	return xenstore.NewPerms(0, xenstore.AccessNone, xenstore.Perm{Domid: domid, Access: xenstore.AccessRead})
}

// Publish replaces the keys of domain domid with keys, in one transaction
// whose requests are all in flight together; it runs again if another
// writer got in the way (EAGAIN). Keys left from an earlier Publish are
// removed. The directory gets Perms(domid) before any key is written, so
// every key, created below it, has the same permissions.
func Publish(ctx context.Context, c *xenstore.Client, domid uint32, keys map[string]string) error {
	if domid == 0 {
		return errors.New("qubesdb: publish for domain 0: dom0 has no VM keys")
	}
	for key := range keys {
		if err := checkKey(key); err != nil {
			return fmt.Errorf("qubesdb: domain %d: %w", domid, err)
		}
	}
	dir := Path(domid)
	err := c.Transaction(ctx, func(tx *xenstore.Transaction) error {
		b := tx.Batch()
		b.RmIfExists(dir)
		b.Mkdir(dir)
		b.SetPerms(dir, Perms(domid))
		for _, key := range slices.Sorted(maps.Keys(keys)) {
			b.WriteString(dir+"/"+key, keys[key])
		}
		return b.Run(ctx)
	})
	if err != nil {
		return fmt.Errorf("qubesdb: publish keys of domain %d: %w", domid, err)
	}
	return nil
}

// Remove deletes the keys of domain domid. Keys that are already gone (or
// a domain home that is gone) are not an error.
func Remove(ctx context.Context, c *xenstore.Client, domid uint32) error {
	if err := c.Rm(ctx, Path(domid)); err != nil && !errors.Is(err, syscall.ENOENT) {
		return fmt.Errorf("qubesdb: remove keys of domain %d: %w", domid, err)
	}
	return nil
}
