package xenstore_test

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os/exec"
	"slices"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/qvm-project/qvm/internal/testenv"
	"github.com/qvm-project/qvm/xenstore"
	"github.com/qvm-project/qvm/xenstore/xenstoretest"
)

func testCtx(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	t.Cleanup(cancel)
	return ctx
}

// nextEvent waits for the watch's next event; the long timeout only keeps a
// broken test from hanging.
func nextEvent(t *testing.T, w *xenstore.Watch) xenstore.Event {
	t.Helper()
	select {
	case e, ok := <-w.Events():
		if !ok {
			t.Fatalf("watch %s ended: %v", w.Path(), w.Err())
		}
		return e
	case <-time.After(10 * time.Second):
		t.Fatalf("no event on watch %s", w.Path())
	}
	return xenstore.Event{}
}

// noEvent checks that nothing is pending on the watch after a sync point:
// the caller has made a round trip on the same client after the change, and
// the daemon sends an event before the reply that caused it.
func noEvent(t *testing.T, w *xenstore.Watch) {
	t.Helper()
	select {
	case e, ok := <-w.Events():
		if ok {
			t.Fatalf("unexpected event %+v on watch %s", e, w.Path())
		}
	case <-time.After(50 * time.Millisecond):
	}
}

func mustWrite(t *testing.T, c *xenstore.Client, path, value string) {
	t.Helper()
	if err := c.WriteString(testCtx(t), path, value); err != nil {
		t.Fatal(err)
	}
}

func mustRead(t *testing.T, c *xenstore.Client, path string) string {
	t.Helper()
	v, err := c.ReadString(testCtx(t), path)
	if err != nil {
		t.Fatal(err)
	}
	return v
}

func TestReadWriteMkdirRmDirectory(t *testing.T) {
	d := xenstoretest.Start(t)
	c := d.Client()
	ctx := testCtx(t)

	mustWrite(t, c, "/vm/a/b", "hello")
	if got := mustRead(t, c, "/vm/a/b"); got != "hello" {
		t.Fatalf("read /vm/a/b = %q, want hello", got)
	}
	// Parents created by the write have empty values.
	if got := mustRead(t, c, "/vm/a"); got != "" {
		t.Fatalf("read /vm/a = %q, want empty", got)
	}
	// Values are bytes: NULs and high bytes survive.
	bin := []byte{0, 1, 2, 0xff, 0, 'x'}
	if err := c.Write(ctx, "/vm/bin", bin); err != nil {
		t.Fatal(err)
	}
	if got, err := c.Read(ctx, "/vm/bin"); err != nil || !bytes.Equal(got, bin) {
		t.Fatalf("read /vm/bin = %v, %v; want %v", got, err, bin)
	}
	if err := c.Mkdir(ctx, "/vm/dir"); err != nil {
		t.Fatal(err)
	}
	if got := mustRead(t, c, "/vm/dir"); got != "" {
		t.Fatalf("mkdir made value %q", got)
	}
	names, err := c.Directory(ctx, "/vm")
	if err != nil {
		t.Fatal(err)
	}
	slices.Sort(names)
	if want := []string{"a", "bin", "dir"}; !slices.Equal(names, want) {
		t.Fatalf("directory /vm = %q, want %q", names, want)
	}
	if names, err := c.Directory(ctx, "/vm/dir"); err != nil || len(names) != 0 {
		t.Fatalf("directory of empty node = %q, %v", names, err)
	}

	if err := c.Rm(ctx, "/vm/a"); err != nil {
		t.Fatal(err)
	}
	_, err = c.Read(ctx, "/vm/a/b")
	if !errors.Is(err, syscall.ENOENT) {
		t.Fatalf("read after rm: %v, want ENOENT", err)
	}
	var xe *xenstore.Error
	if !errors.As(err, &xe) || xe.Path != "/vm/a/b" || xe.Op != "read" {
		t.Fatalf("error %#v does not name the operation and path", err)
	}
	if !strings.Contains(err.Error(), "/vm/a/b") || !strings.Contains(err.Error(), "ENOENT") {
		t.Fatalf("error text %q lacks path or errno name", err)
	}
	// Removing what is already gone, below a node that exists, succeeds.
	if err := c.Rm(ctx, "/vm/a"); err != nil {
		t.Fatalf("rm of missing node: %v", err)
	}
	if err := c.Rm(ctx, "/nothing/here"); !errors.Is(err, syscall.ENOENT) {
		t.Fatalf("rm below a missing parent: %v, want ENOENT", err)
	}
	// In a batch, RmIfExists forgives the missing parent too.
	b := c.Batch()
	b.RmIfExists("/nothing/here")
	b.RmIfExists("/vm/dir")
	if err := b.Run(ctx); err != nil {
		t.Fatalf("RmIfExists: %v", err)
	}
	if _, err := c.Read(ctx, "/vm/dir"); !errors.Is(err, syscall.ENOENT) {
		t.Fatalf("/vm/dir after RmIfExists: %v", err)
	}
	b = c.Batch()
	b.Rm("/nothing/here")
	if err := b.Run(ctx); !errors.Is(err, syscall.ENOENT) {
		t.Fatalf("batch Rm below a missing parent: %v, want ENOENT", err)
	}
	if _, err := c.Directory(ctx, "/nothing"); !errors.Is(err, syscall.ENOENT) {
		t.Fatalf("directory of missing node: %v, want ENOENT", err)
	}
	// Bad paths are the daemon's EINVAL.
	if err := c.WriteString(ctx, "/vm//x", "v"); !errors.Is(err, syscall.EINVAL) {
		t.Fatalf("write to /vm//x: %v, want EINVAL", err)
	}
	// A NUL in a path would split it; refused before sending.
	if err := c.WriteString(ctx, "/vm/x\x00y", "v"); !errors.Is(err, syscall.EINVAL) {
		t.Fatalf("write to path with NUL: %v, want EINVAL", err)
	}
}

// The C tool sees what the Go client wrote, and the other way round.
func TestInteropWithCTools(t *testing.T) {
	xsWrite := testenv.LookPath(t, "xenstore-write")
	xsRead := testenv.LookPath(t, "xenstore-read")
	d := xenstoretest.Start(t)
	c := d.Client()

	mustWrite(t, c, "/interop/go", "from go")
	cmd := exec.Command(xsRead, "/interop/go")
	cmd.Env = d.Env()
	out, err := cmd.CombinedOutput()
	if err != nil || strings.TrimSpace(string(out)) != "from go" {
		t.Fatalf("xenstore-read: %q, %v", out, err)
	}
	cmd = exec.Command(xsWrite, "/interop/c", "from c")
	cmd.Env = d.Env()
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("xenstore-write: %s: %v", out, err)
	}
	if got := mustRead(t, c, "/interop/c"); got != "from c" {
		t.Fatalf("read what C wrote: %q", got)
	}
}

// A directory whose child list is over 4096 bytes is read in parts.
func TestDirectoryLarge(t *testing.T) {
	d := xenstoretest.Start(t)
	c := d.Client()
	ctx := testCtx(t)
	var want []string
	b := c.Batch()
	for i := range 300 {
		name := fmt.Sprintf("child-with-a-long-name-%04d", i)
		want = append(want, name)
		b.WriteString("/big/"+name, "v")
	}
	if err := b.Run(ctx); err != nil {
		t.Fatal(err)
	}
	got, err := c.Directory(ctx, "/big")
	if err != nil {
		t.Fatal(err)
	}
	slices.Sort(got)
	if !slices.Equal(got, want) {
		t.Fatalf("directory /big: got %d names, want %d", len(got), len(want))
	}
}

func TestPermissions(t *testing.T) {
	xsls := testenv.LookPath(t, "xenstore-ls")
	d := xenstoretest.Start(t)
	c := d.Client()
	ctx := testCtx(t)

	cases := map[string]xenstore.Perms{
		"/p/owner-only": xenstore.NewPerms(0, xenstore.AccessNone),
		"/p/guest-read": xenstore.NewPerms(0, xenstore.AccessNone, xenstore.Perm{Domid: 5, Access: xenstore.AccessRead}),
		"/p/mixed": xenstore.NewPerms(3, xenstore.AccessRead,
			xenstore.Perm{Domid: 7, Access: xenstore.AccessBoth},
			xenstore.Perm{Domid: 9, Access: xenstore.AccessWrite},
			xenstore.Perm{Domid: 11, Access: xenstore.AccessNone}),
	}
	for path, perms := range cases {
		mustWrite(t, c, path, "v")
		if err := c.SetPerms(ctx, path, perms); err != nil {
			t.Fatal(err)
		}
		got, err := c.GetPerms(ctx, path)
		if err != nil {
			t.Fatal(err)
		}
		if !slices.Equal(got, perms) {
			t.Errorf("%s: perms read back %v, want %v", path, got, perms)
		}
	}
	// Nodes created below inherit their parent's permissions.
	mustWrite(t, c, "/p/guest-read/child", "v")
	if got, _ := c.GetPerms(ctx, "/p/guest-read/child"); got.String() != "n0,r5" {
		t.Errorf("child perms %v, want inherited n0,r5", got)
	}

	cmd := exec.Command(xsls, "-p", "/p")
	cmd.Env = d.Env()
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("xenstore-ls -p: %s: %v", out, err)
	}
	for _, want := range []string{
		`owner-only = "v"`, "(n0)",
		`guest-read = "v"`, "(n0,r5)",
		`mixed = "v"`, "(r3,b7,w9,n11)",
	} {
		if !strings.Contains(string(out), want) {
			t.Errorf("xenstore-ls -p output lacks %q:\n%s", want, out)
		}
	}
	if err := c.SetPerms(ctx, "/p/mixed", nil); !errors.Is(err, syscall.EINVAL) {
		t.Errorf("empty perms: %v, want EINVAL", err)
	}
	if err := c.SetPerms(ctx, "/p/none", xenstore.NewPerms(0, xenstore.AccessNone)); !errors.Is(err, syscall.ENOENT) {
		t.Errorf("set perms on missing node: %v, want ENOENT", err)
	}
}

func TestWatchWritesAndRemovals(t *testing.T) {
	d := xenstoretest.Start(t)
	c := d.Client()
	other := d.Client()
	ctx := testCtx(t)

	mustWrite(t, c, "/w", "")
	w, err := c.Watch(ctx, "/w")
	if err != nil {
		t.Fatal(err)
	}
	if e := nextEvent(t, w); e.Path != "/w" {
		t.Fatalf("first event %+v, want the watched path", e)
	}
	mustWrite(t, other, "/w/a", "1")
	if e := nextEvent(t, w); e.Path != "/w/a" {
		t.Fatalf("event after write: %+v", e)
	}
	mustWrite(t, other, "/w/a/deep", "2")
	if e := nextEvent(t, w); e.Path != "/w/a/deep" {
		t.Fatalf("event after deep write: %+v", e)
	}
	if err := other.Rm(ctx, "/w/a"); err != nil {
		t.Fatal(err)
	}
	// A removal fires once for the removed node at the watches above it;
	// nodes removed below it fire only watches set exactly on them.
	if e := nextEvent(t, w); e.Path != "/w/a" {
		t.Fatalf("event after rm: %+v", e)
	}
	mustRead(t, c, "/w")
	noEvent(t, w)
	// Writes elsewhere do not fire.
	mustWrite(t, other, "/elsewhere", "x")
	mustRead(t, c, "/elsewhere")
	noEvent(t, w)

	if err := w.Unwatch(ctx); err != nil {
		t.Fatal(err)
	}
	if _, ok := <-w.Events(); ok {
		t.Fatal("events channel open after Unwatch")
	}
	if w.Err() != nil {
		t.Fatalf("Err after Unwatch: %v", w.Err())
	}
	// The daemon dropped it: a new watch on the same path sees the next
	// write, and only one event is delivered for it.
	w2, err := c.Watch(ctx, "/w")
	if err != nil {
		t.Fatal(err)
	}
	nextEvent(t, w2)
	mustWrite(t, other, "/w/b", "3")
	if e := nextEvent(t, w2); e.Path != "/w/b" {
		t.Fatalf("event on new watch: %+v", e)
	}
}

// Two clients race transactions on the same node: the second to commit gets
// EAGAIN, and the retrying helper gets through.
func TestTransactionRace(t *testing.T) {
	d := xenstoretest.Start(t)
	a, b := d.Client(), d.Client()
	ctx := testCtx(t)
	mustWrite(t, a, "/counter", "0")

	ta, err := a.Begin(ctx)
	if err != nil {
		t.Fatal(err)
	}
	tb, err := b.Begin(ctx)
	if err != nil {
		t.Fatal(err)
	}
	for _, tx := range []*xenstore.Transaction{ta, tb} {
		if _, err := tx.Read(ctx, "/counter"); err != nil {
			t.Fatal(err)
		}
		if err := tx.WriteString(ctx, "/counter", fmt.Sprint(tx.ID())); err != nil {
			t.Fatal(err)
		}
	}
	// Inside the transaction, its own write is visible; outside, not yet.
	if v, _ := ta.ReadString(ctx, "/counter"); v != fmt.Sprint(ta.ID()) {
		t.Fatalf("transaction does not see its own write: %q", v)
	}
	if v := mustRead(t, a, "/counter"); v != "0" {
		t.Fatalf("uncommitted write visible outside: %q", v)
	}
	if err := ta.Commit(ctx); err != nil {
		t.Fatalf("first commit: %v", err)
	}
	err = tb.Commit(ctx)
	if !errors.Is(err, syscall.EAGAIN) {
		t.Fatalf("second commit: %v, want EAGAIN", err)
	}
	if v := mustRead(t, a, "/counter"); v != fmt.Sprint(ta.ID()) {
		t.Fatalf("after race /counter = %q, want the first committer's value", v)
	}
	if err := tb.WriteString(ctx, "/counter", "x"); !errors.Is(err, xenstore.ErrTransactionDone) {
		t.Fatalf("write after end: %v", err)
	}

	// The helper: in its first run another client changes the node between
	// the read and the commit, so the commit fails with EAGAIN; the helper
	// runs the function again and the increment lands on the new value.
	runs := 0
	err = a.Transaction(ctx, func(tx *xenstore.Transaction) error {
		runs++
		v, err := tx.ReadString(ctx, "/counter")
		if err != nil {
			return err
		}
		if runs == 1 {
			mustWrite(t, b, "/counter", "100")
		}
		return tx.WriteString(ctx, "/counter", v+"+1")
	})
	if err != nil {
		t.Fatal(err)
	}
	if runs != 2 {
		t.Fatalf("function ran %d times, want 2 (one EAGAIN, one success)", runs)
	}
	if v := mustRead(t, a, "/counter"); v != "100+1" {
		t.Fatalf("/counter = %q, want 100+1", v)
	}

	// Many clients incrementing at once: every increment counts.
	mustWrite(t, a, "/n", "0")
	var wg sync.WaitGroup
	var mu sync.Mutex
	var totalRuns int
	const workers, each = 4, 15
	for range workers {
		c := d.Client()
		wg.Add(1)
		go func() {
			defer wg.Done()
			for range each {
				err := c.Transaction(ctx, func(tx *xenstore.Transaction) error {
					mu.Lock()
					totalRuns++
					mu.Unlock()
					v, err := tx.ReadString(ctx, "/n")
					if err != nil {
						return err
					}
					var n int
					fmt.Sscan(v, &n)
					return tx.WriteString(ctx, "/n", fmt.Sprint(n+1))
				})
				if err != nil {
					t.Error(err)
					return
				}
			}
		}()
	}
	wg.Wait()
	if v := mustRead(t, a, "/n"); v != fmt.Sprint(workers*each) {
		t.Fatalf("/n = %s after %d increments (%d runs)", v, workers*each, totalRuns)
	}
	t.Logf("%d increments took %d runs", workers*each, totalRuns)

	// An error from the function aborts: nothing is written.
	boom := errors.New("boom")
	err = a.Transaction(ctx, func(tx *xenstore.Transaction) error {
		if err := tx.WriteString(ctx, "/aborted", "x"); err != nil {
			return err
		}
		return boom
	})
	if !errors.Is(err, boom) {
		t.Fatalf("Transaction returned %v, want the function's error", err)
	}
	if _, err := a.Read(ctx, "/aborted"); !errors.Is(err, syscall.ENOENT) {
		t.Fatalf("aborted write visible: %v", err)
	}
}

// Requests of a batch and of concurrent callers are in flight together and
// each reply reaches its own caller.
func TestPipelining(t *testing.T) {
	d := xenstoretest.Start(t)
	c := d.Client()
	ctx := testCtx(t)

	err := c.Transaction(ctx, func(tx *xenstore.Transaction) error {
		b := tx.Batch()
		for i := range 200 {
			b.WriteString(fmt.Sprintf("/pipe/k%03d", i), fmt.Sprint(i))
		}
		b.SetPerms("/pipe", xenstore.NewPerms(0, xenstore.AccessRead))
		return b.Run(ctx)
	})
	if err != nil {
		t.Fatal(err)
	}
	b := c.Batch()
	vals := make([][]byte, 200)
	for i := range vals {
		b.Read(fmt.Sprintf("/pipe/k%03d", i), &vals[i])
	}
	var missing []byte
	b.Read("/pipe/missing", &missing)
	err = b.Run(ctx)
	if !errors.Is(err, syscall.ENOENT) || !strings.Contains(err.Error(), "/pipe/missing") {
		t.Fatalf("batch with a missing key: %v", err)
	}
	for i, v := range vals {
		if string(v) != fmt.Sprint(i) {
			t.Fatalf("batch read k%03d = %q", i, v)
		}
	}

	var wg sync.WaitGroup
	for g := range 16 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range 50 {
				k := fmt.Sprintf("/conc/g%d/k%d", g, i)
				want := fmt.Sprintf("%d-%d", g, i)
				if err := c.WriteString(ctx, k, want); err != nil {
					t.Error(err)
					return
				}
				if got, err := c.ReadString(ctx, k); err != nil || got != want {
					t.Errorf("read %s = %q, %v; want %q", k, got, err, want)
					return
				}
			}
		}()
	}
	wg.Wait()
}

// Requests over the payload limit are refused before they are sent (the
// daemon would drop the connection); the connection stays usable.
func TestOversizedRequest(t *testing.T) {
	d := xenstoretest.Start(t)
	c := d.Client()
	ctx := testCtx(t)
	big := bytes.Repeat([]byte("x"), xenstore.PayloadMax)
	err := c.Write(ctx, "/big", big)
	if !errors.Is(err, syscall.E2BIG) {
		t.Fatalf("oversized write: %v, want E2BIG", err)
	}
	// The largest value that fits: payload = path NUL value.
	fit := big[:xenstore.PayloadMax-len("/big")-1]
	if err := c.Write(ctx, "/big", fit); err != nil {
		t.Fatalf("write of the largest value: %v", err)
	}
	if got, err := c.Read(ctx, "/big"); err != nil || len(got) != len(fit) {
		t.Fatalf("read back %d bytes, %v", len(got), err)
	}
}

func TestGetDomainPathIntroduceRelease(t *testing.T) {
	d := xenstoretest.Start(t)
	c := d.Client()
	ctx := testCtx(t)

	for _, id := range []uint32{0, 1, 42, 32752} {
		p, err := c.GetDomainPath(ctx, id)
		if err != nil || p != fmt.Sprintf("/local/domain/%d", id) {
			t.Fatalf("GetDomainPath(%d) = %q, %v", id, p, err)
		}
	}
	if in, err := c.IsDomainIntroduced(ctx, 0); err != nil || !in {
		t.Fatalf("dom0 introduced = %v, %v", in, err)
	}
	if in, err := c.IsDomainIntroduced(ctx, 9); err != nil || in {
		t.Fatalf("dom9 introduced before Introduce = %v, %v", in, err)
	}
	intro, err := c.Watch(ctx, "@introduceDomain")
	if err != nil {
		t.Fatal(err)
	}
	rel, err := c.Watch(ctx, "@releaseDomain")
	if err != nil {
		t.Fatal(err)
	}
	if e := nextEvent(t, intro); e.Path != "@introduceDomain" {
		t.Fatalf("first event %+v", e)
	}
	if e := nextEvent(t, rel); e.Path != "@releaseDomain" {
		t.Fatalf("first event %+v", e)
	}

	if err := c.Introduce(ctx, 9, 0x1234, 1); err != nil {
		t.Fatal(err)
	}
	if e := nextEvent(t, intro); e.Path != "@introduceDomain" {
		t.Fatalf("event after Introduce: %+v", e)
	}
	if in, err := c.IsDomainIntroduced(ctx, 9); err != nil || !in {
		t.Fatalf("dom9 introduced after Introduce = %v, %v", in, err)
	}
	if err := c.Introduce(ctx, 10, 0, 0); !errors.Is(err, syscall.EINVAL) {
		t.Fatalf("Introduce with port 0: %v, want EINVAL", err)
	}

	if err := c.Release(ctx, 9); err != nil {
		t.Fatal(err)
	}
	if e := nextEvent(t, rel); e.Path != "@releaseDomain" {
		t.Fatalf("event after Release: %+v", e)
	}
	if in, err := c.IsDomainIntroduced(ctx, 9); err != nil || in {
		t.Fatalf("dom9 introduced after Release = %v, %v", in, err)
	}
	if err := c.Release(ctx, 9); !errors.Is(err, syscall.ENOENT) {
		t.Fatalf("second Release: %v, want ENOENT", err)
	}

	// A domain that dies (as the hypervisor reports it) is dropped too.
	d.Guest(11)
	if e := nextEvent(t, intro); e.Path != "@introduceDomain" {
		t.Fatalf("event after introducing dom11: %+v", e)
	}
	if err := d.MarkDying(11); err != nil {
		t.Fatal(err)
	}
	if e := nextEvent(t, rel); e.Path != "@releaseDomain" {
		t.Fatalf("event after domain death: %+v", e)
	}
	if in, err := c.IsDomainIntroduced(ctx, 11); err != nil || in {
		t.Fatalf("dead dom11 introduced = %v, %v", in, err)
	}
	noEvent(t, intro)
}

func TestResetWatches(t *testing.T) {
	d := xenstoretest.Start(t)
	c := d.Client()
	ctx := testCtx(t)
	mustWrite(t, c, "/r", "")
	w, err := c.Watch(ctx, "/r")
	if err != nil {
		t.Fatal(err)
	}
	nextEvent(t, w)
	tx, err := c.Begin(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if err := c.ResetWatches(ctx); err != nil {
		t.Fatal(err)
	}
	if _, ok := <-w.Events(); ok {
		t.Fatal("watch still open after ResetWatches")
	}
	if !errors.Is(w.Err(), xenstore.ErrWatchesReset) {
		t.Fatalf("watch Err = %v", w.Err())
	}
	// The daemon dropped the transaction too.
	if err := tx.WriteString(ctx, "/r/x", "1"); !errors.Is(err, syscall.ENOENT) {
		t.Fatalf("write in a transaction after reset: %v, want ENOENT", err)
	}
	// A watch made afterwards is the only one left: one event per write.
	w2, err := c.Watch(ctx, "/r")
	if err != nil {
		t.Fatal(err)
	}
	nextEvent(t, w2)
	mustWrite(t, c, "/r/y", "1")
	if e := nextEvent(t, w2); e.Path != "/r/y" {
		t.Fatalf("event %+v", e)
	}
	noEvent(t, w2)
}

// stopDaemon freezes xenstored so requests stay in flight.
func stopDaemon(t *testing.T, d *xenstoretest.Daemon) (resume func()) {
	t.Helper()
	if err := syscall.Kill(d.Pid(), syscall.SIGSTOP); err != nil {
		t.Fatal(err)
	}
	resumed := false
	resume = func() {
		if !resumed {
			resumed = true
			syscall.Kill(d.Pid(), syscall.SIGCONT)
		}
	}
	t.Cleanup(resume)
	return resume
}

func TestContextCancel(t *testing.T) {
	d := xenstoretest.Start(t)
	c := d.Client()
	ctx := testCtx(t)
	mustWrite(t, c, "/k", "right")
	mustWrite(t, c, "/other", "wrong")

	resume := stopDaemon(t, d)
	short, cancel := context.WithTimeout(ctx, 100*time.Millisecond)
	_, err := c.Read(short, "/other")
	cancel()
	if !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("read with expiring context: %v, want DeadlineExceeded", err)
	}
	cctx, cancel := context.WithCancel(ctx)
	done := make(chan error)
	go func() {
		_, err := c.Read(cctx, "/other")
		done <- err
	}()
	cancel()
	if err := <-done; !errors.Is(err, context.Canceled) {
		t.Fatalf("cancelled read: %v, want Canceled", err)
	}
	// A batch too big for the socket buffer, to a daemon that does not
	// read: the write itself gives up when the context ends, and the
	// connection, now holding part of a message, is dropped.
	b := c.Batch()
	for i := range 4000 {
		b.Write(fmt.Sprintf("/flood/%d", i), bytes.Repeat([]byte("x"), 4000))
	}
	short, cancel = context.WithTimeout(ctx, 200*time.Millisecond)
	t0 := time.Now()
	err = b.Run(short)
	cancel()
	t.Logf("stuck batch gave up after %v: %v", time.Since(t0), err)
	if !errors.Is(err, context.DeadlineExceeded) && !errors.Is(err, xenstore.ErrConnectionLost) {
		t.Fatalf("stuck batch: %v", err)
	}
	resume()
	// The late replies to the abandoned reads are dropped, not handed to
	// the next caller.
	for range 3 {
		if got := mustRead(t, c, "/k"); got != "right" {
			t.Fatalf("read /k = %q after cancelled reads", got)
		}
	}
}

func TestDaemonRestart(t *testing.T) {
	d := xenstoretest.Start(t)
	c := d.Client()
	ctx := testCtx(t)
	mustWrite(t, c, "/before", "1")
	mustWrite(t, c, "/watched", "")
	w, err := c.Watch(ctx, "/watched")
	if err != nil {
		t.Fatal(err)
	}
	nextEvent(t, w)

	// A call in flight when the daemon dies fails with a clear error.
	stopDaemon(t, d)
	done := make(chan error)
	go func() {
		_, err := c.Read(ctx, "/before")
		done <- err
	}()
	time.Sleep(50 * time.Millisecond) // let the request go out (either way it must fail)
	if err := d.Restart(); err != nil {
		t.Fatal(err)
	}
	err = <-done
	if !errors.Is(err, xenstore.ErrConnectionLost) {
		t.Fatalf("call in flight across restart: %v, want ErrConnectionLost", err)
	}
	if !strings.Contains(err.Error(), "connection to xenstore daemon lost") {
		t.Fatalf("unclear error: %v", err)
	}

	// The watch is registered again on its own: the new daemon fires it
	// once, without any call on the client.
	if e := nextEvent(t, w); e.Path != "/watched" {
		t.Fatalf("event after restart: %+v", e)
	}
	// The next call works on the new daemon, whose store is empty.
	if _, err := c.Read(ctx, "/before"); !errors.Is(err, syscall.ENOENT) {
		t.Fatalf("read on restarted daemon: %v, want ENOENT", err)
	}
	mustWrite(t, c, "/after", "2")
	other := d.Client()
	mustWrite(t, other, "/watched/x", "3")
	if e := nextEvent(t, w); e.Path != "/watched/x" {
		t.Fatalf("event from the restarted daemon: %+v", e)
	}

	// A transaction does not survive its connection.
	tx, err := c.Begin(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if err := d.Restart(); err != nil {
		t.Fatal(err)
	}
	if err := tx.WriteString(ctx, "/t", "x"); !errors.Is(err, xenstore.ErrConnectionLost) {
		// The loss may not be seen yet; the commit surely fails.
		if err == nil {
			err = tx.Commit(ctx)
		}
		if !errors.Is(err, xenstore.ErrConnectionLost) {
			t.Fatalf("transaction across restart: %v, want ErrConnectionLost", err)
		}
	}
	mustWrite(t, c, "/after2", "ok")
}

func TestClose(t *testing.T) {
	d := xenstoretest.Start(t)
	c := d.Client()
	ctx := testCtx(t)
	w, err := c.Watch(ctx, "/")
	if err != nil {
		t.Fatal(err)
	}
	c.Close()
	if _, err := c.Read(ctx, "/"); !errors.Is(err, xenstore.ErrClosed) {
		t.Fatalf("read after Close: %v", err)
	}
	for range w.Events() {
	}
	if !errors.Is(w.Err(), xenstore.ErrClosed) {
		t.Fatalf("watch Err after Close: %v", w.Err())
	}
}

// TestTransactionRetryLimit: a transaction that conflicts on every attempt
// (another writer changes its node each time) is given up after the
// client's retry limit, with EAGAIN in the error, instead of forever.
func TestTransactionRetryLimit(t *testing.T) {
	d := xenstoretest.Start(t)
	ctx := testCtx(t)
	c, err := xenstore.Open(ctx, xenstore.Config{Path: d.Socket, TransactionRetryLimit: 300 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	other := d.Client()
	mustWrite(t, c, "/hot", "0")
	runs := 0
	err = c.Transaction(ctx, func(tx *xenstore.Transaction) error {
		runs++
		if _, err := tx.Read(ctx, "/hot"); err != nil {
			return err
		}
		if err := tx.WriteString(ctx, "/hot", "mine"); err != nil {
			return err
		}
		// Another writer gets in before every commit.
		return other.WriteString(ctx, "/hot", fmt.Sprint(runs))
	})
	if !errors.Is(err, syscall.EAGAIN) || !strings.Contains(err.Error(), "still conflicting") {
		t.Fatalf("err = %v, want the retries given up with EAGAIN", err)
	}
	if runs < 2 {
		t.Errorf("%d attempts: the transaction was not retried", runs)
	}
}
