package main

import (
	"context"
	"fmt"
	"sort"
	"strconv"

	"github.com/qvm-project/qvm/lifecycle"
	"github.com/qvm-project/qvm/qubesdb"
)

// runQubesDB is qvm-qubesdb: show the QubesDB-like keys a VM gets in
// xenstore at start, with their paths and permissions (a dry run: nothing
// is written).
func runQubesDB(ctx context.Context, a *app, args []string) error {
	c := a.newCmdline(ctx, "[options] VMNAME")
	domid := c.Uint32("domid", 0, "domain id to show the paths for (default: the running domain's, else DOMID)")
	if err := c.parse(args); err != nil {
		return err
	}
	if c.NArg() != 1 {
		return usagef("give one VMNAME")
	}
	_, sys, err := c.session().load()
	if err != nil {
		return err
	}
	v, err := sys.View(c.Arg(0))
	if err != nil {
		return err
	}
	info := lifecycle.QubesDBInfo(v)
	info.RandomSeed = make([]byte, qubesdb.RandomSeedSize) // shown as zeros: a fresh one is drawn at each start
	keys, err := qubesdb.Keys(info)
	if err != nil {
		return err
	}
	id := "DOMID"
	if rt := v.Runtime(); rt.XID >= 0 && *domid == 0 {
		id = strconv.Itoa(rt.XID)
	} else if *domid != 0 {
		id = strconv.FormatUint(uint64(*domid), 10)
	}
	names := make([]string, 0, len(keys))
	for k := range keys {
		names = append(names, k)
	}
	sort.Strings(names)
	fmt.Fprintf(a.stdout, "# /local/domain/%s/%s/  owner dom0, readable by domain %s only (n0,r%s); one transaction\n", id, qubesdb.Dir, id, id)
	for _, k := range names {
		fmt.Fprintf(a.stdout, "%s = %q\n", k, keys[k])
	}
	return nil
}
