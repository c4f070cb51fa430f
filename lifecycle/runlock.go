package lifecycle

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"golang.org/x/sys/unix"

	"github.com/qvm-project/qvm/store"
	"github.com/qvm-project/qvm/vm"
)

// A VM's run lock is an flock on run/NAME.lock in the state directory,
// held by the command that starts the VM and then by the VM's monitor
// for as long as its domain lives (see monitor.go). It is what makes a VM
// count as running while it is being started.

// runLockDir holds the VMs' run locks in the state directory.
const runLockDir = "run"

// ErrStarting is returned (wrapped) when another qvm command holds a VM's
// run lock: it is starting, its monitor still runs, or a start of one of
// its AppVMs is copying its root image.
var ErrStarting = errors.New("is being started or used by another qvm command, or its monitor still runs")

func runLockPath(st *store.Store, name string) string {
	return filepath.Join(st.Dir(), runLockDir, name+".lock")
}

// lockRun takes a VM's run lock without waiting.
func (m *Manager) lockRun(name string) (*os.File, error) { return m.flockRun(name, unix.LOCK_EX) }

// shareRun takes a shared hold on a VM's run lock without waiting: the
// VM cannot start while it is held (a template whose root is copied).
func (m *Manager) shareRun(name string) (*os.File, error) { return m.flockRun(name, unix.LOCK_SH) }

func (m *Manager) flockRun(name string, how int) (*os.File, error) {
	p := runLockPath(m.Store, name)
	if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
		return nil, fmt.Errorf("run lock of %s: %w", name, err)
	}
	f, err := os.OpenFile(p, os.O_RDWR|os.O_CREATE, 0o644)
	if err != nil {
		return nil, fmt.Errorf("run lock of %s: %w", name, err)
	}
	if err := unix.Flock(int(f.Fd()), how|unix.LOCK_NB); err != nil {
		f.Close()
		if errors.Is(err, unix.EWOULDBLOCK) {
			return nil, fmt.Errorf("%s %w (try again in a moment, or see qvm-ls)", name, ErrStarting)
		}
		return nil, fmt.Errorf("run lock of %s: %w", name, err)
	}
	return f, nil
}

// Starting returns a test of whether a VM's run lock is held exclusively
// (by a start or a monitor), read from
// the kernel's list of locks (/proc/locks, read once) without touching the
// locks themselves, so that asking never gets in a start's way.
func Starting(st *store.Store) func(name string) bool {
	held := heldFlocks()
	return func(name string) bool {
		if len(held) == 0 {
			return false
		}
		var s unix.Stat_t
		if err := unix.Stat(runLockPath(st, name), &s); err != nil {
			return false
		}
		return held[fileID{uint32(unix.Major(s.Dev)), uint32(unix.Minor(s.Dev)), s.Ino}]
	}
}

type fileID struct {
	major, minor uint32
	ino          uint64
}

// heldFlocks reads the files with an flock from /proc/locks: lines like
// "3: FLOCK  ADVISORY  WRITE 1234 fd:01:5678 0 EOF" (the file is given as
// major:minor:inode, the numbers in hex, the inode in decimal).
func heldFlocks() map[fileID]bool {
	f, err := os.Open("/proc/locks")
	if err != nil {
		return nil
	}
	defer f.Close()
	held := map[fileID]bool{}
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		fields := strings.Fields(sc.Text())
		// A blocked waiter's line starts with "->" and has one field more.
		if len(fields) >= 6 && fields[1] == "->" {
			continue
		}
		// Only exclusive holders start VMs; a shared hold is an AppVM's
		// start copying its template's root.
		if len(fields) < 6 || fields[1] != "FLOCK" || fields[3] != "WRITE" {
			continue
		}
		parts := strings.Split(fields[5], ":")
		if len(parts) != 3 {
			continue
		}
		maj, err1 := strconv.ParseUint(parts[0], 16, 32)
		min, err2 := strconv.ParseUint(parts[1], 16, 32)
		ino, err3 := strconv.ParseUint(parts[2], 10, 64)
		if err1 == nil && err2 == nil && err3 == nil {
			held[fileID{uint32(maj), uint32(min), ino}] = true
		}
	}
	return held
}

// WithStarts adds the VMs being started to a runtime lookup: a VM whose
// run lock is held but that the hypervisor does not list is Transient.
func WithStarts(st *store.Store, base func(string) (vm.Runtime, bool)) func(string) (vm.Runtime, bool) {
	starting := Starting(st)
	return func(name string) (vm.Runtime, bool) {
		if base != nil {
			if rt, ok := base(name); ok {
				return rt, true
			}
		}
		if starting(name) {
			return vm.Runtime{State: vm.Transient, XID: -1, StubdomXID: -1}, true
		}
		return vm.Runtime{}, false
	}
}

// monitorGrace bounds how long Kill and Shutdown wait for the monitor of
// a VM whose domain is gone to finish.
const monitorGrace = 30 * time.Second

// awaitMonitor waits until nothing holds the VM's run lock exclusively:
// once its domain is gone the VM's monitor removes its run files and
// exits, and until then every other command counts the VM as Transient.
// Kill and Shutdown return only after that, so that a stopped VM is
// Halted when they do. A monitor stuck past monitorGrace does not make
// the stop fail (the domain is gone): it is logged, and the VM shows as
// Transient while it lasts. The lock is only looked at, never taken, so a
// start that comes first is not held up.
func (m *Manager) awaitMonitor(ctx context.Context, name string) {
	deadline := time.Now().Add(monitorGrace)
	for Starting(m.Store)(name) {
		if time.Now().After(deadline) {
			m.log().Warn("the VM's domain is gone but its run lock is still held (its monitor, or a new start)", "vm", name, "waited", monitorGrace)
			return
		}
		select {
		case <-ctx.Done():
			return
		case <-time.After(50 * time.Millisecond):
		}
	}
}
