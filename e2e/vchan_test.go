package e2e

import (
	"bufio"
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/qvm-project/qvm/internal/testenv"
	"github.com/qvm-project/qvm/vchan"
	"github.com/qvm-project/qvm/xendev"
	"github.com/qvm-project/qvm/xenstore"
)

// vchanInside runs packages xendev and vchan on real Xen, in the bed's
// dom0, where a channel from dom0 to itself goes through the real
// gntalloc, gntdev and evtchn devices. It checks the device wrappers, moves
// 64 MiB each way through a channel and checks every byte, close and EOF,
// that nothing (grant, port, mapping, descriptor, goroutine, key) is left
// after Close, and that vchan and Xen's C libxenvchan (vchan-socket-proxy)
// talk in both roles.
func vchanInside(t *testing.T) {
	t.Run("xendev", vcXendev)
	t.Run("GoGo", vcGoGo)
	t.Run("GoServerCClient", vcGoServerCClient)
	t.Run("CServerGoClient", vcCServerGoClient)
}

func vcCtx(t *testing.T, d time.Duration) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), d)
	t.Cleanup(cancel)
	return ctx
}

func vcXendev(t *testing.T) {
	ctx := vcCtx(t, time.Minute)
	a, err := xendev.OpenEvtchn()
	if err != nil {
		t.Fatal(err)
	}
	defer a.Close()
	b, err := xendev.OpenEvtchn()
	if err != nil {
		t.Fatal(err)
	}
	defer b.Close()
	pa, err := a.BindUnboundPort(0)
	if err != nil {
		t.Fatal(err)
	}
	pb, err := b.BindInterdomain(0, pa)
	if err != nil {
		t.Fatal(err)
	}
	pending := func(e *xendev.Evtchn, want xendev.Port) {
		t.Helper()
		wctx, cancel := context.WithTimeout(ctx, 10*time.Second)
		defer cancel()
		ports := make([]xendev.Port, 4)
		n, err := e.Pending(wctx, ports)
		if err != nil || n != 1 || ports[0] != want {
			t.Fatalf("Pending = %v, %v; want [%d]", ports[:n], err, want)
		}
		if err := e.Unmask(ports[:n]...); err != nil {
			t.Fatal(err)
		}
	}
	quiet := func(e *xendev.Evtchn) {
		t.Helper()
		wctx, cancel := context.WithTimeout(ctx, 100*time.Millisecond)
		defer cancel()
		if n, err := e.Pending(wctx, make([]xendev.Port, 4)); !errors.Is(err, context.DeadlineExceeded) {
			t.Fatalf("Pending with no event = %d, %v; want a timeout", n, err)
		}
	}
	quiet(a)
	if err := b.Notify(pb); err != nil {
		t.Fatal(err)
	}
	pending(a, pa)
	if err := a.Notify(pa); err != nil {
		t.Fatal(err)
	}
	pending(b, pb)
	// Raw event round trips, for scale: a notifies, b waits; b notifies,
	// a waits.
	const trips = 50
	start := time.Now()
	for range trips {
		if err := a.Notify(pa); err != nil {
			t.Fatal(err)
		}
		pending(b, pb)
		if err := b.Notify(pb); err != nil {
			t.Fatal(err)
		}
		pending(a, pa)
	}
	t.Logf("event channel round trip through the evtchn devices: %v", (time.Since(start) / trips).Round(time.Microsecond))
	// Reset drops what is queued.
	b.Notify(pb)
	time.Sleep(50 * time.Millisecond)
	if err := a.Reset(); err != nil {
		t.Fatal(err)
	}
	quiet(a)
	a.Unmask(pa)
	// VIRQ_TBUF (4), which nothing in the bed binds.
	if pv, err := a.BindVirq(4); err != nil {
		t.Errorf("BindVirq(VIRQ_TBUF): %v", err)
	} else if err := a.Unbind(pv); err != nil {
		t.Error(err)
	}

	// Grant two pages to ourselves, map them, see writes vcBoth ways.
	ga, err := xendev.OpenGntalloc()
	if err != nil {
		t.Fatal(err)
	}
	defer ga.Close()
	gd, err := xendev.OpenGntdev()
	if err != nil {
		t.Fatal(err)
	}
	defer gd.Close()
	if err := gd.SetMaxGrants(16); err != nil && !errors.Is(err, errors.ErrUnsupported) {
		t.Errorf("SetMaxGrants: %v", err)
	}
	sh, err := ga.Alloc(0, 2, true)
	if err != nil {
		t.Fatal(err)
	}
	if len(sh.Refs()) != 2 || len(sh.Bytes()) != 2*xendev.PageSize {
		t.Fatalf("Alloc: %d refs, %d bytes", len(sh.Refs()), len(sh.Bytes()))
	}
	const msg = "across the page boundary"
	copy(sh.Bytes()[4090:], msg)
	m, err := gd.Map(0, sh.Refs(), true)
	if err != nil {
		t.Fatal(err)
	}
	if got := string(m.Bytes()[4090 : 4090+len(msg)]); got != msg {
		t.Fatalf("mapped pages hold %q", got)
	}
	m.Bytes()[5000] = 0x5a
	if sh.Bytes()[5000] != 0x5a {
		t.Fatal("a write through the mapping is not in the shared pages")
	}
	// The mapping's unmap notification clears a byte of the shared pages
	// and notifies b's port, which a receives.
	sh.Bytes()[4097] = 1
	if err := m.SetUnmapNotify(4097, xendev.NotifyClearByte|xendev.NotifySendEvent, pb); err != nil {
		t.Fatal(err)
	}
	if err := m.Close(); err != nil {
		t.Fatal(err)
	}
	if sh.Bytes()[4097] != 0 {
		t.Fatal("unmapping did not clear the notification byte")
	}
	pending(a, pa)
	// The shared pages' notification, seen through a mapping that outlives
	// them.
	m2, err := gd.Map(0, sh.Refs()[:1], false)
	if err != nil {
		t.Fatal(err)
	}
	sh.Bytes()[7] = 1
	if err := sh.SetUnmapNotify(7, xendev.NotifyClearByte|xendev.NotifySendEvent, pa); err != nil {
		t.Fatal(err)
	}
	if err := sh.Close(); err != nil {
		t.Fatal(err)
	}
	if m2.Bytes()[7] != 0 {
		t.Fatal("freeing the shared pages did not clear the notification byte")
	}
	pending(b, pb)
	if err := m2.Close(); err != nil {
		t.Fatal(err)
	}
	// A reference nobody granted does not map, and leaves no mapping.
	if m, err := gd.Map(0, []uint32{1<<20 - 3}, false); err == nil {
		m.Close()
		t.Fatal("mapped a grant reference nobody granted")
	}
	if n := vcXenMappings(t); n != 0 {
		t.Fatalf("%d device mappings left", n)
	}
	if err := b.Unbind(pb); err != nil {
		t.Fatal(err)
	}
	if err := b.Notify(pb); !errors.Is(err, syscall.ENOTCONN) {
		t.Fatalf("Notify on an unbound port: %v, want ENOTCONN", err)
	}
}

// vcFootprint is what this process holds of Xen and the kernel.
type vcFootprint struct {
	fds, mappings, irqs, goroutines int
}

func vcTakeFootprint(t *testing.T) vcFootprint {
	t.Helper()
	fds, err := os.ReadDir("/proc/self/fd")
	if err != nil {
		t.Fatal(err)
	}
	return vcFootprint{fds: len(fds), mappings: vcXenMappings(t), irqs: vcEvtchnIRQs(t), goroutines: runtime.NumGoroutine()}
}

// vcXenMappings counts this process's mappings of the grant devices.
func vcXenMappings(t *testing.T) int {
	t.Helper()
	b, err := os.ReadFile("/proc/self/maps")
	if err != nil {
		t.Fatal(err)
	}
	return strings.Count(string(b), "/dev/xen/gnt")
}

// vcEvtchnIRQs counts the event channel interrupts bound through evtchn
// devices this process opened (the kernel names them after our command).
func vcEvtchnIRQs(t *testing.T) int {
	t.Helper()
	comm, err := os.ReadFile("/proc/self/comm")
	if err != nil {
		t.Fatal(err)
	}
	b, err := os.ReadFile("/proc/interrupts")
	if err != nil {
		t.Fatal(err)
	}
	return strings.Count(string(b), "evtchn:"+strings.TrimSpace(string(comm))+"\n")
}

// vcCheckFootprint waits a little for goroutines to end, then compares.
func vcCheckFootprint(t *testing.T, before vcFootprint) {
	t.Helper()
	var now vcFootprint
	for start := time.Now(); time.Since(start) < 5*time.Second; time.Sleep(10 * time.Millisecond) {
		if now = vcTakeFootprint(t); now.goroutines <= before.goroutines && now.fds <= before.fds {
			break
		}
	}
	if now.fds > before.fds || now.mappings > before.mappings || now.irqs > before.irqs || now.goroutines > before.goroutines {
		t.Errorf("after Close: %+v, before the channel: %+v", now, before)
	}
}

// vcPattern fills b with the bytes at offset off of stream seed: each
// aligned 8-byte word a function of its index, so that lost, repeated or
// misplaced bytes show.
func vcPattern(b []byte, seed, off uint64) {
	word := func(i uint64) uint64 { return (i ^ seed) * 0x9e3779b97f4a7c15 }
	// Bytes up to the first word boundary, whole words, then the tail.
	for len(b) > 0 && off%8 != 0 {
		b[0] = byte(word(off/8) >> (8 * (off % 8)))
		b, off = b[1:], off+1
	}
	for len(b) >= 8 {
		binary.LittleEndian.PutUint64(b, word(off/8))
		b, off = b[8:], off+8
	}
	for i := range b {
		b[i] = byte(word(off/8) >> (8 * (off % 8)))
		off++
	}
}

// vcSend writes n bytes of stream seed to w in chunks.
func vcSend(w io.Writer, seed uint64, n int) error {
	buf := make([]byte, 256<<10)
	for off := 0; off < n; {
		k := min(len(buf), n-off)
		vcPattern(buf[:k], seed, uint64(off))
		if _, err := w.Write(buf[:k]); err != nil {
			return fmt.Errorf("write at byte %d: %w", off, err)
		}
		off += k
	}
	return nil
}

// vcCheck reads n bytes from r and checks they are stream seed.
func vcCheck(r io.Reader, seed uint64, n int) error {
	buf := make([]byte, 256<<10)
	want := make([]byte, len(buf))
	for off := 0; off < n; {
		k, err := r.Read(buf[:min(len(buf), n-off)])
		vcPattern(want[:k], seed, uint64(off))
		if !bytes.Equal(buf[:k], want[:k]) {
			i := 0
			for buf[i] == want[i] {
				i++
			}
			return fmt.Errorf("byte %d is %#x, want %#x", off+i, buf[i], want[i])
		}
		off += k
		if err != nil {
			return fmt.Errorf("read at byte %d: %w", off, err)
		}
	}
	return nil
}

// vcBoth runs the two functions at once and returns their errors.
func vcBoth(f, g func() error) error {
	var wg sync.WaitGroup
	var ef, eg error
	wg.Add(2)
	go func() { defer wg.Done(); ef = f() }()
	go func() { defer wg.Done(); eg = g() }()
	wg.Wait()
	return errors.Join(ef, eg)
}

func vcMBps(n int, d time.Duration) float64 { return float64(n) / d.Seconds() / 1e6 }

func vcDialStore(t *testing.T) *xenstore.Client {
	t.Helper()
	xs, err := xenstore.Dial(vcCtx(t, 30*time.Second))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { xs.Close() })
	return xs
}

// The channel's grant references and server port, read as a third party
// would (mapping the shared page).
func vcResources(t *testing.T, xs *xenstore.Client, base string) (refs []uint32, port uint32) {
	t.Helper()
	ctx := vcCtx(t, 10*time.Second)
	var keys [2]uint32
	for i, k := range []string{"ring-ref", "event-channel"} {
		v, err := xs.ReadString(ctx, base+"/"+k)
		if err != nil {
			t.Fatal(err)
		}
		n, err := strconv.ParseUint(v, 10, 32)
		if err != nil {
			t.Fatal(err)
		}
		keys[i] = uint32(n)
	}
	r, p := keys[0], keys[1]
	gd, err := xendev.OpenGntdev()
	if err != nil {
		t.Fatal(err)
	}
	defer gd.Close()
	m, err := gd.Map(0, []uint32{r}, false)
	if err != nil {
		t.Fatal(err)
	}
	defer m.Close()
	// The page's ring orders (u16s at 16 and 18) say how many grants
	// follow the header (u32s from 24).
	page := m.Bytes()
	refs = []uint32{r}
	for _, off := range []int{16, 18} {
		if order := int(binary.LittleEndian.Uint16(page[off:])); order >= 12 {
			for range 1 << (order - 12) {
				refs = append(refs, binary.LittleEndian.Uint32(page[24+4*(len(refs)-1):]))
			}
		}
	}
	return refs, p
}

// vcCheckReleased checks Xen no longer has the grants and the port: they
// neither map nor bind.
func vcCheckReleased(t *testing.T, refs []uint32, port uint32) {
	t.Helper()
	gd, err := xendev.OpenGntdev()
	if err != nil {
		t.Fatal(err)
	}
	defer gd.Close()
	for _, r := range refs {
		if m, err := gd.Map(0, []uint32{r}, false); err == nil {
			m.Close()
			t.Errorf("grant %d still maps after Close", r)
		}
	}
	e, err := xendev.OpenEvtchn()
	if err != nil {
		t.Fatal(err)
	}
	defer e.Close()
	if _, err := e.BindInterdomain(0, xendev.Port(port)); err == nil {
		t.Errorf("server port %d still binds after Close", port)
	}
}

// 64 MiB each way at once between our server and our client, in dom0.
func vcGoGo(t *testing.T) {
	ctx := vcCtx(t, 10*time.Minute)
	xs := vcDialStore(t)
	before := vcTakeFootprint(t)
	const port, order = 700, 16
	srv, err := vchan.Server(ctx, xs, 0, port, order, order)
	if err != nil {
		t.Fatal(err)
	}
	cli, err := vchan.Client(ctx, xs, 0, port)
	if err != nil {
		srv.Close()
		t.Fatal(err)
	}
	if err := srv.WaitConnected(ctx); err != nil {
		t.Fatal(err)
	}
	base := vchan.KeyPath(0, 0, port)
	refs, evport := vcResources(t, xs, base)
	if want := 1 + 2<<(order-12); len(refs) != want {
		t.Fatalf("%d grants, want %d", len(refs), want)
	}

	const n = 64 << 20
	var up, down time.Duration
	start := time.Now()
	err = vcBoth(func() error {
		return vcBoth(func() error { return vcSend(cli, 1, n) }, func() error { return vcSend(srv, 2, n) })
	}, func() error {
		return vcBoth(func() error {
			err := vcCheck(srv, 1, n)
			up = time.Since(start)
			return err
		}, func() error {
			err := vcCheck(cli, 2, n)
			down = time.Since(start)
			return err
		})
	})
	if err != nil {
		t.Fatal(err)
	}
	// Event round trips: one byte there and back, each side waiting for
	// the other.
	const trips = 200
	echo := make(chan error, 1)
	go func() {
		b := make([]byte, 1)
		for range trips {
			if _, err := io.ReadFull(srv, b); err != nil {
				echo <- err
				return
			}
			if _, err := srv.Write(b); err != nil {
				echo <- err
				return
			}
		}
		echo <- nil
	}()
	one := make([]byte, 1)
	start = time.Now()
	for range trips {
		if _, err := cli.Write(one); err != nil {
			t.Fatal(err)
		}
		if _, err := io.ReadFull(cli, one); err != nil {
			t.Fatal(err)
		}
	}
	rtt := time.Since(start) / trips
	if err := <-echo; err != nil {
		t.Fatal(err)
	}
	// The same round trips through two pipes, for scale: what waking a
	// thread costs here.
	pipeRTT := vcPipeRTT(t, trips)
	// The machine's memory copy speed, for scale (pages touched first).
	src, dst := make([]byte, 32<<20), make([]byte, 32<<20)
	vcPattern(src, 9, 0)
	vcPattern(dst, 9, 0)
	start = time.Now()
	copy(src, dst)
	memcpy := vcMBps(len(src), time.Since(start))
	// One way, unchecked.
	mid := vcOneWay(t, ctx, xs, port+1, order, 32<<20)
	big := vcOneWay(t, ctx, xs, port+2, vchan.MaxOrder, 32<<20)
	t.Logf("vchan throughput, dom0 to dom0 in nested Xen under TCG: rings of 2^%d bytes, 64 MiB each way at once, every byte checked: %.1f MB/s client to server, %.1f MB/s server to client; 32 MiB one way unchecked: %.1f MB/s with rings of 2^%d, %.1f MB/s with rings of 2^%d; one-byte round trip %v (through pipes %v); memcpy %.0f MB/s",
		order, vcMBps(n, up), vcMBps(n, down), mid, order, big, vchan.MaxOrder, rtt.Round(time.Microsecond), pipeRTT.Round(time.Microsecond), memcpy)

	// Close and EOF.
	if _, err := cli.Write([]byte("bye")); err != nil {
		t.Fatal(err)
	}
	if err := cli.Close(); err != nil {
		t.Fatal(err)
	}
	got := make([]byte, 8)
	if k, err := io.ReadFull(srv, got[:3]); err != nil || string(got[:k]) != "bye" {
		t.Fatalf("server read %q, %v; want the client's last bytes", got[:k], err)
	}
	if _, err := srv.Read(got); err != io.EOF {
		t.Fatalf("server Read after the client closed: %v, want io.EOF", err)
	}
	if _, err := srv.Write(got); !errors.Is(err, vchan.ErrPeerClosed) {
		t.Fatalf("server Write after the client closed: %v, want vchan.ErrPeerClosed", err)
	}
	if err := srv.Close(); err != nil {
		t.Fatal(err)
	}
	if _, err := xs.Read(ctx, base); !errors.Is(err, syscall.ENOENT) {
		t.Errorf("keys after Close: %v, want ENOENT", err)
	}
	vcCheckReleased(t, refs, evport)
	vcCheckFootprint(t, before)
}

// vcPipeRTT times one-byte round trips between two goroutines through two
// pipes.
func vcPipeRTT(t *testing.T, trips int) time.Duration {
	t.Helper()
	ar, aw, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	br, bw, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	defer func() { ar.Close(); aw.Close(); br.Close(); bw.Close() }()
	go func() {
		b := make([]byte, 1)
		for range trips {
			if _, err := io.ReadFull(ar, b); err != nil {
				return
			}
			bw.Write(b)
		}
	}()
	b := make([]byte, 1)
	start := time.Now()
	for range trips {
		aw.Write(b)
		if _, err := io.ReadFull(br, b); err != nil {
			t.Fatal(err)
		}
	}
	return time.Since(start) / time.Duration(trips)
}

// vcOneWay sends n bytes through a new channel with rings of the given
// order, reading them without looking, and returns the rate in MB/s.
func vcOneWay(t *testing.T, ctx context.Context, xs *xenstore.Client, port, order, n int) float64 {
	t.Helper()
	srv, err := vchan.Server(ctx, xs, 0, port, order, order)
	if err != nil {
		t.Fatal(err)
	}
	defer srv.Close()
	cli, err := vchan.Client(ctx, xs, 0, port)
	if err != nil {
		t.Fatal(err)
	}
	defer cli.Close()
	buf := make([]byte, 1<<20)
	start := time.Now()
	err = vcBoth(func() error {
		for sent := 0; sent < n; sent += len(buf) {
			if _, err := cli.Write(buf); err != nil {
				return err
			}
		}
		return nil
	}, func() error {
		rbuf := make([]byte, 1<<20)
		for got := 0; got < n; {
			k, err := srv.Read(rbuf)
			if err != nil {
				return err
			}
			got += k
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return vcMBps(n, time.Since(start))
}

func vcProxy(t *testing.T, ctx context.Context, args ...string) (*exec.Cmd, io.WriteCloser, io.ReadCloser) {
	t.Helper()
	path := "/usr/lib/xen-4.17/bin/vchan-socket-proxy"
	if _, err := os.Stat(path); err != nil {
		path = testenv.LookPath(t, "vchan-socket-proxy")
	}
	cmd := exec.CommandContext(ctx, path, args...)
	cmd.Stderr = &vcLineLogger{t: t, prefix: "vchan-socket-proxy: "}
	stdin, err := cmd.StdinPipe()
	if err != nil {
		t.Fatal(err)
	}
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cmd.Process.Kill(); cmd.Wait() })
	return cmd, stdin, stdout
}

type vcLineLogger struct {
	t      *testing.T
	prefix string
}

func (l *vcLineLogger) Write(p []byte) (int, error) {
	sc := bufio.NewScanner(strings.NewReader(string(p)))
	for sc.Scan() {
		l.t.Log(l.prefix + sc.Text())
	}
	return len(p), nil
}

// Our server (multi-page rings), Xen's C client.
func vcGoServerCClient(t *testing.T) {
	ctx := vcCtx(t, 5*time.Minute)
	xs := vcDialStore(t)
	before := vcTakeFootprint(t)
	const port = 701
	srv, err := vchan.Server(ctx, xs, 0, port, 15, 14)
	if err != nil {
		t.Fatal(err)
	}
	defer srv.Close()
	refs, evport := vcResources(t, xs, vchan.KeyPath(0, 0, port))
	cmd, stdin, stdout := vcProxy(t, ctx, "0", vchan.KeyPath(0, 0, port), "-")
	if err := srv.WaitConnected(ctx); err != nil {
		t.Fatal(err)
	}
	const n = 8 << 20
	start := time.Now()
	err = vcBoth(func() error {
		return vcBoth(func() error { return vcSend(stdin, 3, n) }, func() error { return vcSend(srv, 4, n) })
	}, func() error {
		return vcBoth(func() error { return vcCheck(srv, 3, n) }, func() error { return vcCheck(stdout, 4, n) })
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("Go server, C client: 8 MiB each way in %.1f s", time.Since(start).Seconds())
	// The C client closes when its input ends: we read EOF.
	stdin.Close()
	if _, err := srv.Read(make([]byte, 1)); err != io.EOF {
		t.Fatalf("Read after the C client closed: %v, want io.EOF", err)
	}
	if err := cmd.Wait(); err != nil {
		t.Fatalf("vchan-socket-proxy: %v", err)
	}
	if err := srv.Close(); err != nil {
		t.Fatal(err)
	}
	vcCheckReleased(t, refs, evport)
	vcCheckFootprint(t, before)
}

// Xen's C server (its rings in the page, orders 10 and 11), our client.
func vcCServerGoClient(t *testing.T) {
	ctx := vcCtx(t, 5*time.Minute)
	xs := vcDialStore(t)
	before := vcTakeFootprint(t)
	const port = 702
	base := vchan.KeyPath(0, 0, port)
	cmd, stdin, stdout := vcProxy(t, ctx, "-m", "server", "0", base, "-")
	cli, err := vchan.Client(ctx, xs, 0, port) // waits for the server's keys
	if err != nil {
		t.Fatal(err)
	}
	defer cli.Close()
	const n = 512 << 10
	err = vcBoth(func() error {
		return vcBoth(func() error { return vcSend(stdin, 5, n) }, func() error { return vcSend(cli, 6, n) })
	}, func() error {
		return vcBoth(func() error { return vcCheck(cli, 5, n) }, func() error { return vcCheck(stdout, 6, n) })
	})
	if err != nil {
		t.Fatal(err)
	}
	// Our close ends the C server, which removes its keys.
	if err := cli.Close(); err != nil {
		t.Fatal(err)
	}
	if rest, err := io.ReadAll(stdout); err != nil || len(rest) != 0 {
		t.Fatalf("C server's output after our close: %d bytes, %v", len(rest), err)
	}
	if err := cmd.Wait(); err != nil {
		t.Fatalf("vchan-socket-proxy: %v", err)
	}
	if _, err := xs.Read(ctx, base); !errors.Is(err, syscall.ENOENT) {
		t.Errorf("C server's keys after it ended: %v, want ENOENT", err)
	}
	vcCheckFootprint(t, before)
}
