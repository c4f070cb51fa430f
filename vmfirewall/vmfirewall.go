package vmfirewall

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"strings"

	"github.com/google/nftables"
	"golang.org/x/sys/unix"
)

// Names in the kernel's ruleset.
const (
	// TableName is qvm's table, in the inet family (IPv4 and IPv6).
	TableName = "qvm"
	// IfacePrefix starts the name of every VM interface the table filters.
	IfacePrefix = "vif"
	// VifMap maps a VM interface to the chain holding its rules.
	VifMap = "vifs"
)

// The table's fixed chains.
const (
	chainPrerouting = "prerouting"
	chainAntispoof  = "antispoof"
	chainInput      = "input"
	chainVMInput    = "vm-input"
	chainForward    = "forward"
)

// DefaultLockPath is the lock Filter takes when LockPath is empty.
const DefaultLockPath = "/run/lock/qvm-vmfirewall.lock"

// Vif is one VM interface to filter.
type Vif struct {
	// Interface is the backend interface in this domain, e.g. vif5.0;
	// it must start with IfacePrefix (the chains match on it).
	Interface string
	// Addrs are the VM's own addresses (IPv4 and IPv6): the only source
	// addresses its packets may carry.
	Addrs []netip.Addr
}

// Filter programs qvm's table in the network namespace of the calling
// thread. The zero value is ready to use.
type Filter struct {
	// LockPath is the lock file serialising changes to the table
	// between processes; "" means DefaultLockPath.
	LockPath string
}

// ErrBadInterface is returned (wrapped) for an interface name the table
// cannot filter.
var ErrBadInterface = errors.New("not a VM interface name")

// checkIface refuses names that the table's iifname "vif*" matches would
// miss, that could be confused with its fixed chains, or that the kernel
// would not take.
func checkIface(name string) error {
	if len(name) <= len(IfacePrefix) || len(name) >= unix.IFNAMSIZ || !strings.HasPrefix(name, IfacePrefix) {
		return fmt.Errorf("%w %q: want %s... of at most %d characters", ErrBadInterface, name, IfacePrefix, unix.IFNAMSIZ-1)
	}
	for _, r := range name {
		if !(r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' || r == '.' || r == '-' || r == '_') {
			return fmt.Errorf("%w %q: only letters, digits, '.', '-' and '_'", ErrBadInterface, name)
		}
	}
	return nil
}

func checkAddrs(v Vif) error {
	for _, a := range v.Addrs {
		a = a.Unmap()
		if !a.IsValid() || a.IsUnspecified() || a.IsMulticast() || a.IsLoopback() || a.Zone() != "" ||
			a.Is4() && a == netip.AddrFrom4([4]byte{255, 255, 255, 255}) {
			return fmt.Errorf("%s: %v is not a VM's unicast address", v.Interface, a)
		}
	}
	return nil
}

// Add filters one VM interface: it creates the table if needed, rewrites
// its fixed chains, replaces the interface's chain with one that accepts
// only the VM's addresses, and points the interface's map element at it,
// all in one batch. It also sets strict reverse-path filtering on the
// interface, which must exist. Add of a filtered interface replaces its
// rules.
func (f Filter) Add(ctx context.Context, v Vif) error {
	if err := checkIface(v.Interface); err != nil {
		return err
	}
	if err := checkAddrs(v); err != nil {
		return err
	}
	addrs := make([]netip.Addr, len(v.Addrs))
	for i, a := range v.Addrs {
		addrs[i] = a.Unmap()
	}
	if err := setRPFilter(v.Interface); err != nil {
		return err
	}
	unlock, err := f.lock(ctx)
	if err != nil {
		return err
	}
	defer unlock()
	c, err := nftables.New()
	if err != nil {
		return fmt.Errorf("nftables: %w", err)
	}
	s, err := addSkeleton(c)
	if err != nil {
		return fmt.Errorf("filter %s: %w", v.Interface, err)
	}
	vc := c.AddChain(&nftables.Chain{Table: s.table, Name: v.Interface})
	c.FlushChain(vc)
	for _, r := range vifRules(addrs) {
		c.AddRule(&nftables.Rule{Table: s.table, Chain: vc, Exprs: r})
	}
	if err := c.SetAddElements(s.vifs, []nftables.SetElement{vifElement(v.Interface)}); err != nil {
		return fmt.Errorf("filter %s: %w", v.Interface, err)
	}
	if err := c.Flush(); err != nil {
		return fmt.Errorf("filter %s: nftables table inet %s (is nf_tables loaded? dom0 needs the nf_tables and nft_ct modules): %w", v.Interface, TableName, err)
	}
	return nil
}

// Remove drops one VM interface's rules; when it was the last filtered
// interface, it deletes the whole table. Removing an interface that has no
// rules (or when there is no table) is not an error.
func (f Filter) Remove(ctx context.Context, ifname string) error {
	if err := checkIface(ifname); err != nil {
		return err
	}
	unlock, err := f.lock(ctx)
	if err != nil {
		return err
	}
	defer unlock()
	c, err := nftables.New()
	if err != nil {
		return fmt.Errorf("nftables: %w", err)
	}
	vifs, found, err := interfaces(c)
	if err != nil || !found {
		return err
	}
	t := &nftables.Table{Family: nftables.TableFamilyINet, Name: TableName}
	if others := slices.DeleteFunc(slices.Clone(vifs), func(n string) bool { return n == ifname }); len(others) == 0 {
		c.DelTable(t)
	} else if len(others) < len(vifs) {
		m, err := c.GetSetByName(t, VifMap)
		if err != nil {
			return fmt.Errorf("unfilter %s: map %s of table inet %s: %w", ifname, VifMap, TableName, err)
		}
		elems, err := c.GetSetElements(m)
		if err != nil {
			return fmt.Errorf("unfilter %s: elements of map %s: %w", ifname, VifMap, err)
		}
		key := ifnameKey(ifname)
		if slices.ContainsFunc(elems, func(e nftables.SetElement) bool { return string(e.Key) == string(key) }) {
			if err := c.SetDeleteElements(m, []nftables.SetElement{{Key: key}}); err != nil {
				return fmt.Errorf("unfilter %s: %w", ifname, err)
			}
		}
		vc := &nftables.Chain{Table: t, Name: ifname}
		c.FlushChain(vc)
		c.DelChain(vc)
	}
	if err := c.Flush(); err != nil {
		return fmt.Errorf("unfilter %s: nftables table inet %s: %w", ifname, TableName, err)
	}
	return nil
}

// Interfaces lists the VM interfaces that have rules, sorted; none when
// there is no table.
func (f Filter) Interfaces() ([]string, error) {
	c, err := nftables.New()
	if err != nil {
		return nil, fmt.Errorf("nftables: %w", err)
	}
	vifs, _, err := interfaces(c)
	return vifs, err
}

// interfaces lists the VM chains of the table and tells whether the table
// exists.
func interfaces(c *nftables.Conn) (vifs []string, found bool, err error) {
	if _, err := c.ListTableOfFamily(TableName, nftables.TableFamilyINet); err != nil {
		if errors.Is(err, unix.ENOENT) {
			return nil, false, nil
		}
		return nil, false, fmt.Errorf("nftables: look up table inet %s: %w", TableName, err)
	}
	chains, err := c.ListChainsOfTableFamily(nftables.TableFamilyINet)
	if err != nil {
		return nil, true, fmt.Errorf("nftables: list chains of table inet %s: %w", TableName, err)
	}
	for _, ch := range chains {
		if ch.Table.Name == TableName && strings.HasPrefix(ch.Name, IfacePrefix) {
			vifs = append(vifs, ch.Name)
		}
	}
	slices.Sort(vifs)
	return vifs, true, nil
}

// setRPFilter turns on strict reverse-path filtering for the interface.
func setRPFilter(ifname string) error {
	p := filepath.Join("/proc/sys/net/ipv4/conf", ifname, "rp_filter")
	if err := os.WriteFile(p, []byte("1"), 0o644); err != nil {
		return fmt.Errorf("interface %s: strict reverse-path filter: %w", ifname, err)
	}
	return nil
}

// lock takes the file lock around a read-modify-write of the table; ctx
// ends the wait.
func (f Filter) lock(ctx context.Context) (unlock func(), err error) {
	path := f.LockPath
	if path == "" {
		path = DefaultLockPath
	}
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		return nil, fmt.Errorf("firewall lock: %w", err)
	}
	file, err := os.OpenFile(path, os.O_RDWR|os.O_CREATE, 0o600)
	if err != nil {
		return nil, fmt.Errorf("firewall lock: %w", err)
	}
	release := func() {
		unix.Flock(int(file.Fd()), unix.LOCK_UN)
		file.Close()
	}
	got := make(chan error, 1)
	go func() {
		var err error
		for {
			if err = unix.Flock(int(file.Fd()), unix.LOCK_EX); err != unix.EINTR {
				break
			}
		}
		got <- err
	}()
	select {
	case err := <-got:
		if err != nil {
			file.Close()
			return nil, fmt.Errorf("firewall lock %s: %w", path, err)
		}
		return release, nil
	case <-ctx.Done():
		// The waiting goroutine gives the lock straight back once it has it.
		go func() {
			if err := <-got; err == nil {
				release()
			} else {
				file.Close()
			}
		}()
		return nil, fmt.Errorf("waiting for the firewall lock %s (another VM interface is being set up): %w", path, ctx.Err())
	}
}
