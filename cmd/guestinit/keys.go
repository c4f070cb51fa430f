package main

import (
	"context"
	"errors"
	"fmt"
	"sort"
	"strings"
	"syscall"
	"time"

	"github.com/qvm-project/qvm/qubesdb"
	"github.com/qvm-project/qvm/xenstore"
)

// showKeys is what qvm.keys=1 asks for: read this VM's QubesDB-like keys
// through the project's xenstore client over /dev/xen/xenbus, print them,
// try to overwrite one (the toolstack made them read-only for us), and
// try to read other domains' keys (which we must not see).
func showKeys(ctx context.Context) error {
	ctx, cancel := context.WithTimeout(ctx, time.Minute)
	defer cancel()
	xs, err := xenstore.Open(ctx, xenstore.Config{Path: xenbusDev})
	if err != nil {
		return fmt.Errorf("open xenstore over %s: %w", xenbusDev, err)
	}
	defer xs.Close()
	self, err := xs.ReadString(ctx, "domid")
	if err != nil {
		return fmt.Errorf("read own domid: %w", err)
	}
	say("domid %s", self)
	names, err := xs.Directory(ctx, qubesdb.Dir)
	if err != nil {
		return fmt.Errorf("list %s: %w", qubesdb.Dir, err)
	}
	sort.Strings(names)
	for _, n := range names {
		if n == "qubes-random-seed" {
			continue
		}
		v, err := xs.ReadString(ctx, qubesdb.Dir+"/"+n)
		if err != nil {
			return fmt.Errorf("read %s: %w", n, err)
		}
		say("key %s=%s", n, v)
	}
	err = xs.WriteString(ctx, qubesdb.Dir+"/qubes-ip", "10.137.99.99")
	say("overwrite qubes-ip: %s", errText(err))
	for id := 1; id <= 16; id++ {
		if fmt.Sprint(id) == self {
			continue
		}
		_, err := xs.ReadString(ctx, fmt.Sprintf("/local/domain/%d/%s/qubes-ip", id, qubesdb.Dir))
		if errors.Is(err, xenstore.ErrConnectionLost) {
			return err
		}
		if err == nil || !strings.Contains(errText(err), "ENOENT") {
			say("peer %d qubes-ip: %s", id, errText(err))
		}
	}
	return nil
}

// errText names an error the way the tests look for it.
func errText(err error) string {
	if err == nil {
		return "ok"
	}
	for _, e := range []struct {
		name string
		err  error
	}{{"EACCES", syscall.EACCES}, {"ENOENT", syscall.ENOENT}, {"EPERM", syscall.EPERM}} {
		if errors.Is(err, e.err) {
			return e.name + " (" + err.Error() + ")"
		}
	}
	return err.Error()
}
