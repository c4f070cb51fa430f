package main

import (
	"context"
	"encoding/base64"
	"encoding/binary"
	"errors"
	"fmt"
	"sort"
	"strings"
	"syscall"
	"time"
	"unsafe"

	"golang.org/x/sys/unix"
	"os"

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
			if err := seedRandom(ctx, xs); err != nil {
				say("random seed: %v", err)
			} else {
				say("random seed: credited to the kernel's pool")
			}
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

// seedRandom feeds the 64 random bytes the toolstack gave this VM into the
// kernel's entropy pool and credits them, as Qubes' agent does: a fresh
// guest under emulation has no entropy yet, and getrandom() (say, for a
// DHCP transaction id) would block.
func seedRandom(ctx context.Context, xs *xenstore.Client) error {
	v, err := xs.ReadString(ctx, qubesdb.Dir+"/qubes-random-seed")
	if err != nil {
		return err
	}
	seed, err := base64.StdEncoding.DecodeString(v)
	if err != nil {
		return fmt.Errorf("decode: %w", err)
	}
	f, err := os.OpenFile("/dev/random", os.O_WRONLY, 0)
	if err != nil {
		return err
	}
	defer f.Close()
	// struct rand_pool_info { int entropy_count; int buf_size; __u32 buf[]; }
	req := make([]byte, 8+len(seed))
	binary.NativeEndian.PutUint32(req[0:], uint32(8*len(seed)))
	binary.NativeEndian.PutUint32(req[4:], uint32(len(seed)))
	copy(req[8:], seed)
	if _, _, errno := unix.Syscall(unix.SYS_IOCTL, f.Fd(), unix.RNDADDENTROPY, uintptr(unsafe.Pointer(&req[0]))); errno != 0 {
		return fmt.Errorf("RNDADDENTROPY: %w", errno)
	}
	return nil
}
