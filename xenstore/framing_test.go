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

func countingClient(t *testing.T, d *xenstoretest.Daemon, perWrite bool) (*xenstore.Client, *countingConn) {
	t.Helper()
	cc := &countingConn{}
	c, err := xenstore.Open(testCtx(t), xenstore.Config{
		Dial: func(ctx context.Context) (io.ReadWriteCloser, error) {
			var dl net.Dialer
			nc, err := dl.DialContext(ctx, "unix", d.Socket)
			cc.Conn = nc
			return cc, err
		},
		OneMessagePerWrite: perWrite,
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
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
