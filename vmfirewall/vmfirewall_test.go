package vmfirewall

import (
	"context"
	"errors"
	"net/netip"
	"strings"
	"testing"
)

// TestRefusesWhatItCannotFilter: names the table's vif* matches would
// miss or the kernel would not take, and addresses no VM can own, are
// refused before anything is changed.
func TestRefusesWhatItCannotFilter(t *testing.T) {
	ctx := context.Background()
	f := Filter{LockPath: t.TempDir() + "/lock"}
	for _, name := range []string{"", "vif", "eth0", "vif1.0 x", "vif1.0/../x", "vif123456789.123", "Vif1.0", "vif1.0\x00"} {
		if err := f.Add(ctx, Vif{Interface: name}); !errors.Is(err, ErrBadInterface) {
			t.Errorf("Add %q: %v, want ErrBadInterface", name, err)
		}
		if err := f.Remove(ctx, name); !errors.Is(err, ErrBadInterface) {
			t.Errorf("Remove %q: %v, want ErrBadInterface", name, err)
		}
	}
	for _, a := range []string{"0.0.0.0", "255.255.255.255", "224.0.0.1", "127.0.0.1", "::", "::1", "ff02::1", "fe80::1%eth0"} {
		err := f.Add(ctx, Vif{Interface: "vif1.0", Addrs: []netip.Addr{netip.MustParseAddr(a)}})
		if err == nil || !strings.Contains(err.Error(), "unicast") {
			t.Errorf("Add with address %s: %v", a, err)
		}
	}
	if err := checkIface("vif12.0-emu"); err != nil {
		t.Errorf("the emulated twin of an HVM's interface: %v", err)
	}
}
