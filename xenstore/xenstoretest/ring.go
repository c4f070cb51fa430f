package xenstoretest

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"path/filepath"
	"sync"
	"sync/atomic"
	"syscall"
	"time"
	"unsafe"

	"github.com/qvm-project/qvm/xenstore"
)

// Layout of struct xenstore_domain_interface (Xen's xs_wire.h).
const (
	ringSize   = 1024
	offReq     = 0
	offRsp     = 1024
	offReqCons = 2048
	offReqProd = 2052
	offRspCons = 2056
	offRspProd = 2060
	offError   = 2072
	pageSize   = 4096
)

// Guest returns a client that speaks to the daemon as domain domid, through
// the domain's xenstore ring page, as the guest's kernel would: the daemon
// applies the permission checks and quotas of an unprivileged domain to it.
// The domain is introduced first (as dom0, event channel port 1) unless it
// already is. The client is closed when the test ends. Only for a Daemon
// from Start.
func (d *Daemon) Guest(domid uint32) *xenstore.Client {
	d.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	dom0, err := xenstore.Open(ctx, xenstore.Config{Path: d.Socket})
	if err != nil {
		d.t.Fatal(err)
	}
	defer dom0.Close()
	in, err := dom0.IsDomainIntroduced(ctx, domid)
	if err != nil {
		d.t.Fatal(err)
	}
	if !in {
		if err := dom0.Introduce(ctx, domid, 0, 1); err != nil {
			d.t.Fatal(err)
		}
	}
	c, err := xenstore.Open(ctx, xenstore.Config{Dial: func(ctx context.Context) (io.ReadWriteCloser, error) {
		return d.openRing(domid)
	}})
	if err != nil {
		d.t.Fatal(err)
	}
	d.t.Cleanup(func() { c.Close() })
	return c
}

// ring is the guest's end of a domain's xenstore ring page: requests go
// into req, replies come from rsp. The daemon is woken by a datagram on the
// fake event channel socket; the guest side polls.
type ring struct {
	mem    []byte
	kick   *net.UnixConn
	closed chan struct{}
	once   sync.Once
}

func (d *Daemon) openRing(domid uint32) (*ring, error) {
	path := filepath.Join(d.RunDir, fmt.Sprintf("fakexen-ring-%d", domid))
	f, err := os.OpenFile(path, os.O_RDWR|os.O_CREATE, 0o600)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	if err := f.Truncate(pageSize); err != nil {
		return nil, err
	}
	mem, err := syscall.Mmap(int(f.Fd()), 0, pageSize, syscall.PROT_READ|syscall.PROT_WRITE, syscall.MAP_SHARED)
	if err != nil {
		return nil, fmt.Errorf("map ring page %s: %w", path, err)
	}
	kick, err := net.DialUnix("unixgram", nil, &net.UnixAddr{Name: filepath.Join(d.RunDir, "fakexen-evtchn"), Net: "unixgram"})
	if err != nil {
		syscall.Munmap(mem)
		return nil, err
	}
	return &ring{mem: mem, kick: kick, closed: make(chan struct{})}, nil
}

func (r *ring) idx(off int) *uint32 { return (*uint32)(unsafe.Pointer(&r.mem[off])) }

func (r *ring) notify() { r.kick.Write([]byte{0, 0, 0, 0}) }

// pause waits a little before polling the ring again; it fails once the
// ring is closed or the daemon flagged an error on it.
func (r *ring) pause(n *int) error {
	select {
	case <-r.closed:
		return io.ErrClosedPipe
	default:
	}
	if e := atomic.LoadUint32(r.idx(offError)); e != 0 {
		return fmt.Errorf("daemon reports ring error %d and ignores this domain", e)
	}
	*n++
	time.Sleep(min(time.Duration(*n)*10*time.Microsecond, time.Millisecond))
	return nil
}

func (r *ring) Write(p []byte) (int, error) {
	written := 0
	spins := 0
	for len(p) > 0 {
		cons := atomic.LoadUint32(r.idx(offReqCons))
		prod := atomic.LoadUint32(r.idx(offReqProd))
		free := ringSize - int(prod-cons)
		if free <= 0 {
			r.notify()
			if err := r.pause(&spins); err != nil {
				return written, err
			}
			continue
		}
		at := int(prod % ringSize)
		n := min(len(p), free, ringSize-at)
		copy(r.mem[offReq+at:offReq+at+n], p[:n])
		atomic.StoreUint32(r.idx(offReqProd), prod+uint32(n))
		p = p[n:]
		written += n
		spins = 0
	}
	r.notify()
	return written, nil
}

func (r *ring) Read(p []byte) (int, error) {
	spins := 0
	for {
		cons := atomic.LoadUint32(r.idx(offRspCons))
		prod := atomic.LoadUint32(r.idx(offRspProd))
		if avail := int(prod - cons); avail > 0 && avail <= ringSize {
			at := int(cons % ringSize)
			n := min(len(p), avail, ringSize-at)
			copy(p[:n], r.mem[offRsp+at:offRsp+at+n])
			atomic.StoreUint32(r.idx(offRspCons), cons+uint32(n))
			r.notify()
			return n, nil
		} else if avail > ringSize {
			return 0, errors.New("ring indexes corrupt")
		}
		if err := r.pause(&spins); err != nil {
			return 0, err
		}
	}
}

func (r *ring) Close() error {
	r.once.Do(func() {
		close(r.closed)
		r.kick.Close()
		// The page stays mapped: a reader may still be polling it, and
		// it is tiny. It goes with the test process.
	})
	return nil
}
