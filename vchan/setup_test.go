package vchan

import (
	"bytes"
	"context"
	"errors"
	"io"
	"strconv"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/qvm-project/qvm/xenstore"
	"github.com/qvm-project/qvm/xenstore/xenstoretest"
)

// testStore starts a private xenstored (the real C daemon) with dom0's and
// the given guests' homes, each domain owning its own and its "domid" key.
func testStore(t *testing.T, guests ...uint32) (*xenstoretest.Daemon, *xenstore.Client) {
	t.Helper()
	d := xenstoretest.Start(t)
	dom0 := d.Client()
	ctx := testCtx(t)
	for _, id := range append([]uint32{0}, guests...) {
		home := "/local/domain/" + strconv.Itoa(int(id))
		if err := dom0.WriteString(ctx, home+"/domid", strconv.Itoa(int(id))); err != nil {
			t.Fatal(err)
		}
		for _, p := range []string{home, home + "/domid"} {
			if err := dom0.SetPerms(ctx, p, xenstore.NewPerms(id, xenstore.AccessNone)); err != nil {
				t.Fatal(err)
			}
		}
	}
	return d, dom0
}

func testCtx(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	t.Cleanup(cancel)
	return ctx
}

// exchange sends n bytes each way at once between a and b and checks them.
func exchange(t *testing.T, a, b *Conn, n int) {
	t.Helper()
	ab, ba := randomBytes(1, n), randomBytes(2, n+3)
	var wg sync.WaitGroup
	var gotAB, gotBA []byte
	errs := make([]error, 4)
	wg.Add(4)
	go func() { defer wg.Done(); errs[0] = pump(a, ab, 1, 10000) }()
	go func() { defer wg.Done(); errs[1] = pump(b, ba, 2, 10000) }()
	go func() { defer wg.Done(); gotAB, errs[2] = drain(b, len(ab), 3, 10000) }()
	go func() { defer wg.Done(); gotBA, errs[3] = drain(a, len(ba), 4, 10000) }()
	wg.Wait()
	if err := errors.Join(errs...); err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(gotAB, ab) || !bytes.Equal(gotBA, ba) {
		t.Fatal("data arrived changed")
	}
}

// A dom0 server and a guest client, set up through a real xenstored: the
// client waits for the keys, which only it may read; data flows; the
// client's close is the server's EOF; the server's close removes the keys;
// nothing is left held.
func TestSetupThroughXenstore(t *testing.T) {
	d, dom0 := testStore(t, 7, 8)
	g7, g8 := d.Guest(7), d.Guest(8)
	ctx := testCtx(t)
	x := newFakeXen()

	type result struct {
		c   *Conn
		err error
	}
	cli := make(chan result, 1)
	go func() {
		c, err := client(ctx, g7, x.dom(7), 0, 512)
		cli <- result{c, err}
	}()
	time.Sleep(50 * time.Millisecond) // the client waits for the keys
	srv, err := server(ctx, dom0, x.dom(0), 7, 512, layout{left: 13, right: 11})
	if err != nil {
		t.Fatal(err)
	}
	defer srv.Close()
	r := <-cli
	if r.err != nil {
		t.Fatal(r.err)
	}
	defer r.c.Close()
	if err := srv.WaitConnected(ctx); err != nil {
		t.Fatal(err)
	}
	if got := r.c.RemoteAddr().String(); got != "0:512" {
		t.Errorf("client's remote address %s, want 0:512", got)
	}

	base := KeyPath(0, 7, 512)
	if base != "/local/domain/0/data/vchan/7/512" {
		t.Fatalf("KeyPath = %s", base)
	}
	for _, k := range []string{"ring-ref", "event-channel"} {
		perms, err := dom0.GetPerms(ctx, base+"/"+k)
		if err != nil || perms.String() != "n0,r7" {
			t.Errorf("%s perms %v (%v), want n0,r7", k, perms, err)
		}
		if _, err := g8.Read(ctx, base+"/"+k); !errors.Is(err, syscall.EACCES) {
			t.Errorf("domain 8 reads %s: %v, want EACCES", k, err)
		}
	}

	exchange(t, srv, r.c, 1<<20)

	if err := r.c.Close(); err != nil {
		t.Fatal(err)
	}
	if _, err := srv.Read(make([]byte, 1)); err != io.EOF {
		t.Fatalf("server Read after the client closed: %v, want io.EOF", err)
	}
	if err := srv.Close(); err != nil {
		t.Fatal(err)
	}
	if _, err := dom0.Read(ctx, base); !errors.Is(err, syscall.ENOENT) {
		t.Fatalf("keys after the server closed: %v, want ENOENT", err)
	}
	if h := x.held(); h != "" {
		t.Fatalf("left held after both closed: %s", h)
	}
}

// A guest can be the server, dom0 its client.
func TestSetupGuestServer(t *testing.T) {
	d, dom0 := testStore(t, 5)
	g5 := d.Guest(5)
	ctx := testCtx(t)
	x := newFakeXen()
	srv, err := server(ctx, g5, x.dom(5), 0, 100, layout{left: 10, right: 11})
	if err != nil {
		t.Fatal(err)
	}
	defer srv.Close()
	cli, err := client(ctx, dom0, x.dom(0), 5, 100)
	if err != nil {
		t.Fatal(err)
	}
	defer cli.Close()
	exchange(t, srv, cli, 100000)
	perms, err := dom0.GetPerms(ctx, KeyPath(5, 0, 100)+"/ring-ref")
	if err != nil || perms.String() != "n5,r0" {
		t.Errorf("ring-ref perms %v (%v), want n5,r0", perms, err)
	}
}

// Whichever step of the setup fails, the error says so and nothing is
// left held: no grant, mapping, port or xenstore key.
func TestSetupFailuresReleaseEverything(t *testing.T) {
	d, dom0 := testStore(t, 7)
	g7 := d.Guest(7)
	ctx := testCtx(t)
	base := KeyPath(0, 7, 9)
	for failAt := 1; ; failAt++ {
		x := newFakeXen()
		x.failAt = failAt
		srv, err := server(ctx, dom0, x.dom(0), 7, 9, layout{left: 12, right: 13})
		if err != nil {
			if !errors.Is(err, errInjected) {
				t.Fatalf("server, failing operation %d: %v", failAt, err)
			}
			if h := x.held(); h != "" {
				t.Fatalf("server failing at operation %d left %s", failAt, h)
			}
			if _, err := dom0.Read(ctx, base); !errors.Is(err, syscall.ENOENT) {
				t.Fatalf("server failing at operation %d left its keys: %v", failAt, err)
			}
			continue
		}
		cli, err := client(ctx, g7, x.dom(7), 0, 9)
		if err == nil {
			exchange(t, srv, cli, 10000)
			cli.Close()
			srv.Close()
			if failAt < 8 {
				t.Fatalf("only %d operations before the setup succeeded", failAt-1)
			}
			break
		}
		if !errors.Is(err, errInjected) {
			t.Fatalf("client, failing operation %d: %v", failAt, err)
		}
		srv.Close()
		if h := x.held(); h != "" {
			t.Fatalf("client failing at operation %d left %s", failAt, h)
		}
	}
}

// A client for a channel nobody publishes waits until its context ends.
func TestClientWaitsForServer(t *testing.T) {
	d, _ := testStore(t, 7)
	g7 := d.Guest(7)
	ctx, cancel := context.WithTimeout(context.Background(), 200*time.Millisecond)
	defer cancel()
	x := newFakeXen()
	start := time.Now()
	_, err := client(ctx, g7, x.dom(7), 0, 1)
	if !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("client with no server: %v, want context.DeadlineExceeded", err)
	}
	if time.Since(start) < 150*time.Millisecond {
		t.Fatal("client gave up before its context ended")
	}
	if h := x.held(); h != "" {
		t.Fatalf("left held: %s", h)
	}
}

// A client refuses a page whose layout Xen would not make, and a channel
// that already has a client; a server's bad orders are refused up front.
func TestClientRefusals(t *testing.T) {
	d, dom0 := testStore(t, 7)
	g7 := d.Guest(7)
	ctx := testCtx(t)
	x := newFakeXen()
	if _, err := server(ctx, dom0, x.dom(0), 7, 1, layout{left: 11, right: 11}); err == nil {
		t.Fatal("server accepted two rings of order 11")
	}
	srv, err := server(ctx, dom0, x.dom(0), 7, 1, layout{left: 10, right: 11})
	if err != nil {
		t.Fatal(err)
	}
	defer srv.Close()
	cli, err := client(ctx, g7, x.dom(7), 0, 1)
	if err != nil {
		t.Fatal(err)
	}
	defer cli.Close()
	held := x.held()
	// Xen lets one domain bind the server's port at a time.
	if _, err := client(ctx, g7, x.dom(7), 0, 1); err == nil {
		t.Fatal("a second client connected")
	}
	if h := x.held(); h != held {
		t.Fatalf("the refused client left %s", h)
	}

	srv2, err := server(ctx, dom0, x.dom(0), 7, 2, layout{left: 12, right: 11})
	if err != nil {
		t.Fatal(err)
	}
	defer srv2.Close()
	page := fakePage(t, dom0, x, KeyPath(0, 7, 2))
	page[offLeftOrder] = MaxOrder // the page now claims a 1 MiB left ring, whose grants do not fit
	held = x.held()
	if _, err := client(ctx, g7, x.dom(7), 0, 2); err == nil {
		t.Fatal("client accepted a layout whose grant list does not fit")
	}
	if h := x.held(); h != held {
		t.Fatalf("the refused client left %s", h)
	}
}

// fakePage returns the shared page of the channel published at base.
func fakePage(t *testing.T, xs *xenstore.Client, x *fakeXen, base string) []byte {
	t.Helper()
	ref, err := xs.ReadString(testCtx(t), base+"/ring-ref")
	if err != nil {
		t.Fatal(err)
	}
	n, _ := strconv.Atoi(ref)
	x.mu.Lock()
	defer x.mu.Unlock()
	return x.grants[uint32(n)].alloc.mem
}

// A client refuses a channel whose page says a client is live already
// (one that did not go away cleanly; Xen would not let it bind otherwise).
func TestClientRefusesLiveClient(t *testing.T) {
	d, dom0 := testStore(t, 7)
	g7 := d.Guest(7)
	ctx := testCtx(t)
	x := newFakeXen()
	srv, err := server(ctx, dom0, x.dom(0), 7, 4, layout{left: 10, right: 11})
	if err != nil {
		t.Fatal(err)
	}
	defer srv.Close()
	page := fakePage(t, dom0, x, KeyPath(0, 7, 4))
	atomic.OrUint32(u32(page, offFlags), liveUp<<shiftCliLive) // 2 | 1: not "waiting"
	atomic.AndUint32(u32(page, offFlags), ^uint32(liveWaiting<<shiftCliLive))
	held := x.held()
	if _, err := client(ctx, g7, x.dom(7), 0, 4); !errors.Is(err, syscall.EBUSY) {
		t.Fatalf("client of a channel with a live client: %v, want EBUSY", err)
	}
	if h := x.held(); h != held {
		t.Fatalf("the refused client left %s", h)
	}
}

// A peer that dies without closing (its mappings torn down by the kernel)
// reads as closed: the unmap notification clears its live flag and sends
// an event.
func TestCrashedPeerReadsAsClosed(t *testing.T) {
	d, dom0 := testStore(t, 7)
	g7 := d.Guest(7)
	ctx := testCtx(t)
	for _, crashServer := range []bool{false, true} {
		x := newFakeXen()
		srv, err := server(ctx, dom0, x.dom(0), 7, 3, layout{left: 12, right: 12})
		if err != nil {
			t.Fatal(err)
		}
		cli, err := client(ctx, g7, x.dom(7), 0, 3)
		if err != nil {
			t.Fatal(err)
		}
		dead, alive := cli, srv
		if crashServer {
			dead, alive = srv, cli
		}
		got := make(chan error, 1)
		go func() { _, err := alive.Read(make([]byte, 1)); got <- err }()
		time.Sleep(20 * time.Millisecond)
		// What the kernel does when a process dies: its mappings go,
		// nothing else.
		release := dead.release
		dead.release = nil
		if err := release(); err != nil {
			t.Fatal(err)
		}
		select {
		case err := <-got:
			if err != io.EOF {
				t.Fatalf("Read of a crashed peer (server crashed: %v): %v, want io.EOF", crashServer, err)
			}
		case <-time.After(5 * time.Second):
			t.Fatalf("a crashed peer (server crashed: %v) went unnoticed", crashServer)
		}
		alive.Close()
		// (The dead side's memory is gone: it is not closed, as a
		// crashed process is not.)
		if h := x.held(); h != "" {
			t.Fatalf("left held: %s", h)
		}
	}
}
