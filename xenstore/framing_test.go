package xenstore_test

import (
	"context"
	"encoding/binary"
	"fmt"
	"io"
	"net"
	"sync"
	"testing"

	"github.com/qvm-project/qvm/xenstore"
	"github.com/qvm-project/qvm/xenstore/xenstoretest"
)

// countingConn records how many messages each write carried.
type countingConn struct {
	net.Conn
	mu     sync.Mutex
	writes []int // messages per write; -1 for a write that splits one
}

func (c *countingConn) Write(p []byte) (int, error) {
	n := 0
	for off := 0; off < len(p); {
		if len(p)-off < 16 {
			n = -1
			break
		}
		l := int(binary.LittleEndian.Uint32(p[off+12:]))
		if off+16+l > len(p) {
			n = -1
			break
		}
		off += 16 + l
		n++
	}
	c.mu.Lock()
	c.writes = append(c.writes, n)
	c.mu.Unlock()
	return c.Conn.Write(p)
}

// wrappedClient is a Client of d whose connection is wrap of the socket.
func wrappedClient(t *testing.T, d *xenstoretest.Daemon, perWrite bool, wrap func(net.Conn) io.ReadWriteCloser) *xenstore.Client {
	t.Helper()
	c, err := xenstore.Open(testCtx(t), xenstore.Config{
		Dial: func(ctx context.Context) (io.ReadWriteCloser, error) {
			var dl net.Dialer
			nc, err := dl.DialContext(ctx, "unix", d.Socket)
			if err != nil {
				return nil, err
			}
			return wrap(nc), nil
		},
		OneMessagePerWrite: perWrite,
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

func countingClient(t *testing.T, d *xenstoretest.Daemon, perWrite bool) (*xenstore.Client, *countingConn) {
	t.Helper()
	cc := &countingConn{}
	c := wrappedClient(t, d, perWrite, func(nc net.Conn) io.ReadWriteCloser { cc.Conn = nc; return cc })
	return c, cc
}

func batchOf(c *xenstore.Client, n int) *xenstore.Batch {
	b := c.Batch()
	for i := range n {
		b.WriteString(fmt.Sprintf("/frame/k%d", i), "v")
	}
	return b
}

// A batch goes out in one write on a socket.
func TestBatchIsOneWrite(t *testing.T) {
	d := xenstoretest.Start(t)
	c, cc := countingClient(t, d, false)
	if err := batchOf(c, 40).Run(testCtx(t)); err != nil {
		t.Fatal(err)
	}
	if len(cc.writes) != 1 || cc.writes[0] != 40 {
		t.Fatalf("writes carried %v messages, want one write of 40", cc.writes)
	}
}

// The xenbus device takes exactly one message per write: with
// OneMessagePerWrite the client never merges or splits messages.
func TestOneMessagePerWrite(t *testing.T) {
	d := xenstoretest.Start(t)
	c, cc := countingClient(t, d, true)
	ctx := testCtx(t)
	if err := batchOf(c, 40).Run(ctx); err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	for g := range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range 20 {
				if err := c.WriteString(ctx, fmt.Sprintf("/frame/g%d/%d", g, i), "v"); err != nil {
					t.Error(err)
				}
			}
		}()
	}
	wg.Wait()
	cc.mu.Lock()
	defer cc.mu.Unlock()
	if len(cc.writes) != 40+8*20 {
		t.Fatalf("%d writes for %d messages", len(cc.writes), 40+8*20)
	}
	for i, n := range cc.writes {
		if n != 1 {
			t.Fatalf("write %d carried %d messages", i, n)
		}
	}
}

// flightConn counts requests written and not yet answered, and keeps
// the most there ever were.
type flightConn struct {
	net.Conn
	mu          sync.Mutex
	outstanding int
	most        int
	in          []byte // reply bytes not yet parsed
}

func (c *flightConn) Write(p []byte) (int, error) {
	c.mu.Lock()
	c.outstanding++
	c.most = max(c.most, c.outstanding)
	c.mu.Unlock()
	return c.Conn.Write(p)
}

func (c *flightConn) Read(p []byte) (int, error) {
	n, err := c.Conn.Read(p)
	c.mu.Lock()
	defer c.mu.Unlock()
	c.in = append(c.in, p[:n]...)
	for len(c.in) >= 16 {
		l := int(binary.LittleEndian.Uint32(c.in[12:]))
		if len(c.in) < 16+l {
			break
		}
		if binary.LittleEndian.Uint32(c.in) != 15 { // not XS_WATCH_EVENT
			c.outstanding--
		}
		c.in = c.in[16+l:]
	}
	return n, err
}

// Over the xenbus device (OneMessagePerWrite) a request is written only
// once the one before has its reply, however many goroutines and
// batches use the Client at once: Linux's device queues a message by
// reference to its per-file buffer, and the next write overwrites it.
func TestOneRequestInFlightOnDevice(t *testing.T) {
	d := xenstoretest.Start(t)
	fc := &flightConn{}
	c := wrappedClient(t, d, true, func(nc net.Conn) io.ReadWriteCloser { fc.Conn = nc; return fc })
	ctx := testCtx(t)
	if err := batchOf(c, 20).Run(ctx); err != nil {
		t.Fatal(err)
	}
	w, err := c.Watch(ctx, "/flight")
	if err != nil {
		t.Fatal(err)
	}
	defer w.Unwatch(ctx)
	var wg sync.WaitGroup
	for g := range 8 {
		wg.Go(func() {
			for i := range 15 {
				path := fmt.Sprintf("/flight/g%d/%d", g, i)
				want := fmt.Sprintf("value of %s", path)
				if err := c.WriteString(ctx, path, want); err != nil {
					t.Error(err)
					return
				}
				// Each read gets its own path's value.
				if got, err := c.ReadString(ctx, path); err != nil || got != want {
					t.Errorf("read %s: %q, %v", path, got, err)
				}
			}
			if err := batchOf(c, 5).Run(ctx); err != nil {
				t.Error(err)
			}
		})
	}
	wg.Wait()
	fc.mu.Lock()
	defer fc.mu.Unlock()
	if fc.most != 1 {
		t.Fatalf("%d requests were in flight at once on the device transport, want 1", fc.most)
	}
}
