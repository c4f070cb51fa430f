package xenvm

import (
	"context"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"time"

	"golang.org/x/sys/unix"
)

// lockName is the file in the temporary directory that RunTest locks while
// its bed runs.
const lockName = "qvm-xenvm.lock"

// lockPoll is how often a waiting lockBed tries again.
const lockPoll = time.Second

// lockBed takes the machine's test-bed lock (an exclusive flock on
// dir/lockName), waiting for whoever holds it, until ctx ends. waiting is
// called once if the lock is held by another process. The returned
// function releases it.
func lockBed(ctx context.Context, dir string, waiting func(path string)) (unlock func(), err error) {
	path := filepath.Join(dir, lockName)
	f, err := os.OpenFile(path, os.O_CREATE|os.O_RDWR, 0o666)
	if err != nil {
		return nil, fmt.Errorf("xenvm: test bed lock %s: %w", path, err)
	}
	told := false
	for {
		err := unix.Flock(int(f.Fd()), unix.LOCK_EX|unix.LOCK_NB)
		if err == nil {
			return func() { f.Close() }, nil
		}
		if err != unix.EWOULDBLOCK && err != unix.EINTR {
			f.Close()
			return nil, fmt.Errorf("xenvm: test bed lock %s: %w", path, err)
		}
		if !told && waiting != nil {
			waiting(path)
			told = true
		}
		select {
		case <-ctx.Done():
			f.Close()
			return nil, fmt.Errorf("xenvm: waiting for test bed lock %s: %w", path, ctx.Err())
		case <-time.After(lockPoll):
		}
	}
}

// LockBed takes the machine's test-bed lock for a program that boots a
// bed with Run (the demo, the benchmarks) as RunTest does for tests, so
// that two emulated machines never share the cores; it says on w, once,
// that it waits. The returned function releases the lock.
func LockBed(ctx context.Context, w io.Writer, who string) (unlock func(), err error) {
	return lockBed(ctx, os.TempDir(), func(path string) {
		fmt.Fprintf(w, "%s: another test bed is running (%s is locked); waiting for it to end\n", who, path)
	})
}
