package main

import (
	"context"
	"fmt"
	"strconv"
	"strings"

	"github.com/qvm-project/qvm/stubdom/dmargs"
	"github.com/qvm-project/qvm/xenstore"
)

// config is what the stubdomain learns from xenstore at boot.
type config struct {
	// Self is the stubdomain's own domid, Target the guest's.
	Self, Target uint32
	// VMPath is the guest's /vm/<uuid> path.
	VMPath string
	// Argv are libxl's device-model arguments, in order.
	Argv []string
}

// devModelPath is the stubdomain's xenstore directory for its guest's
// device model: QEMU writes "state" there, the QMP vchan lives there.
func (c config) devModelPath() string {
	return fmt.Sprintf("/local/domain/%d/device-model/%d", c.Self, c.Target)
}

// readConfig reads the stubdomain's own domid and target (relative keys:
// xenstored resolves them in the caller's home), the target's vm path and
// the dm-argv entries libxl wrote there.
func readConfig(ctx context.Context, xs *xenstore.Client) (config, error) {
	var c config
	var err error
	if c.Self, err = readDomid(ctx, xs, "domid"); err != nil {
		return c, err
	}
	if c.Target, err = readDomid(ctx, xs, "target"); err != nil {
		return c, err
	}
	if c.Target == c.Self || c.Target == 0 {
		return c, fmt.Errorf("xenstore key target is %d: a stubdomain serves a guest other than dom0 and itself", c.Target)
	}
	vmKey := fmt.Sprintf("/local/domain/%d/vm", c.Target)
	if c.VMPath, err = xs.ReadString(ctx, vmKey); err != nil {
		return c, fmt.Errorf("read the guest's vm path: %w", err)
	}
	if !strings.HasPrefix(c.VMPath, "/vm/") || strings.ContainsAny(c.VMPath[4:], "/\x00") {
		return c, fmt.Errorf("%s is %q: want /vm/<uuid>", vmKey, c.VMPath)
	}
	dir := c.VMPath + "/image/dm-argv"
	keys, err := xs.Directory(ctx, dir)
	if err != nil {
		return c, fmt.Errorf("list the device-model arguments: %w", err)
	}
	if len(keys) > 4096 {
		return c, fmt.Errorf("%s has %d entries: too many", dir, len(keys))
	}
	// One request at a time: the kernel's xenbus device keeps a pointer
	// to the body of a request it has not sent yet into the file's write
	// buffer, so pipelined requests (a Batch) can be sent with the body of
	// a later one (seen in the nested Xen: every read returned the last
	// key's value).
	entries := make(map[string]string, len(keys))
	for _, k := range keys {
		v, err := xs.ReadString(ctx, dir+"/"+k)
		if err != nil {
			return c, fmt.Errorf("read the device-model arguments: %w", err)
		}
		entries[k] = v
	}
	if c.Argv, err = dmargs.Sorted(entries); err != nil {
		return c, fmt.Errorf("%s: %w", dir, err)
	}
	return c, nil
}

func readDomid(ctx context.Context, xs *xenstore.Client, key string) (uint32, error) {
	s, err := xs.ReadString(ctx, key)
	if err != nil {
		return 0, fmt.Errorf("read xenstore key %s: %w", key, err)
	}
	n, err := strconv.ParseUint(s, 10, 16)
	if err != nil || n >= 0x7ff0 {
		return 0, fmt.Errorf("xenstore key %s is %q: not a domain id", key, s)
	}
	return uint32(n), nil
}
