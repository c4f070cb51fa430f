package vchan

import (
	"errors"
	"fmt"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"unsafe"

	"golang.org/x/sys/unix"
)

// alignedBytes returns n zeroed bytes, 8-byte aligned, as mmap'd pages
// would be (the page's indexes are updated atomically).
func alignedBytes(n int) []byte {
	w := make([]uint64, (n+7)/8)
	return unsafe.Slice((*byte)(unsafe.Pointer(&w[0])), n)
}

// fakeXen is an in-memory hypervisor for setup tests: grant tables and
// event channels of several domains, with the checks Xen makes (a grant is
// mapped only by its grantee, writable only if granted so; a port is bound
// only by the domain it was allocated for) and the kernel's unmap
// notifications. It counts what is held, to find leaks, and can fail its
// n-th operation, to exercise error paths.
type fakeXen struct {
	mu       sync.Mutex
	nextRef  uint32
	nextPort uint32
	grants   map[uint32]*fakeGrant // by reference (one table for all domains: refs are unique)
	ports    map[uint32]*fakePort  // by port (likewise)
	mapped   int                   // mappings not yet closed
	ops      int                   // operations so far
	failAt   int                   // fail operation number failAt (1-based); 0: never
}

type fakeGrant struct {
	owner, grantee uint32
	alloc          *fakeRun // the run this page belongs to
	idx            int      // its page number in the run
	writable       bool
	maps           int
	ended          bool // the owner gave it up
}

// fakeRun is the memory of pages shared together: mmap'd, outside Go's
// heap, as real shared memory is (so the race detector leaves it alone:
// the two sides of a setup synchronise through xenstore, which it cannot
// see). It is unmapped with its last grant.
type fakeRun struct {
	mem  []byte
	refs int
}

type fakePort struct {
	dom, remote uint32
	port        uint32
	peer        *fakePort
	h           eventHandler
	closed      bool
}

var errInjected = errors.New("fake xen: injected failure")

func newFakeXen() *fakeXen {
	return &fakeXen{nextRef: 8, nextPort: 1, grants: map[uint32]*fakeGrant{}, ports: map[uint32]*fakePort{}}
}

// dom returns the hyper of one domain.
func (x *fakeXen) dom(id uint32) hyper { return fakeDom{x: x, id: id} }

// step counts an operation and says whether it is the one to fail. The
// caller holds x.mu.
func (x *fakeXen) step() error {
	x.ops++
	if x.ops == x.failAt {
		return errInjected
	}
	return nil
}

// held describes what is still allocated, in a stable order; "" when
// nothing is.
func (x *fakeXen) held() string {
	x.mu.Lock()
	defer x.mu.Unlock()
	var items []string
	for ref, g := range x.grants {
		items = append(items, fmt.Sprintf("grant %d of dom%d to dom%d (ended %v, maps %d)", ref, g.owner, g.grantee, g.ended, g.maps))
	}
	for p, fp := range x.ports {
		items = append(items, fmt.Sprintf("port %d of dom%d", p, fp.dom))
	}
	if x.mapped != 0 {
		items = append(items, fmt.Sprintf("%d mappings", x.mapped))
	}
	slices.Sort(items)
	return strings.Join(items, "; ")
}

type fakeDom struct {
	x  *fakeXen
	id uint32
}

func (d fakeDom) bindUnbound(remote uint32, h eventHandler) (evtchn, error) {
	d.x.mu.Lock()
	defer d.x.mu.Unlock()
	if err := d.x.step(); err != nil {
		return nil, err
	}
	p := &fakePort{dom: d.id, remote: remote, port: d.x.nextPort, h: h}
	d.x.nextPort++
	d.x.ports[p.port] = p
	return fakeEvtchn{x: d.x, p: p}, nil
}

func (d fakeDom) bindInterdomain(remote, port uint32, h eventHandler) (evtchn, error) {
	d.x.mu.Lock()
	defer d.x.mu.Unlock()
	if err := d.x.step(); err != nil {
		return nil, err
	}
	r := d.x.ports[port]
	if r == nil || r.dom != remote || r.remote != d.id || r.peer != nil {
		return nil, fmt.Errorf("fake xen: dom%d cannot bind to port %d of dom%d", d.id, port, remote)
	}
	p := &fakePort{dom: d.id, remote: remote, port: d.x.nextPort, h: h, peer: r}
	d.x.nextPort++
	r.peer = p
	d.x.ports[p.port] = p
	return fakeEvtchn{x: d.x, p: p}, nil
}

type fakeEvtchn struct {
	x *fakeXen
	p *fakePort
}

func (e fakeEvtchn) port() uint32 { return e.p.port }

func (e fakeEvtchn) notify() error {
	e.x.mu.Lock()
	defer e.x.mu.Unlock()
	if e.p.closed {
		return errors.New("fake xen: notify on a closed port")
	}
	e.x.send(e.p)
	return nil
}

// send delivers an event to the other end of p, if bound. The caller holds
// x.mu.
func (x *fakeXen) send(p *fakePort) {
	if p.peer != nil && !p.peer.closed {
		p.peer.h.wake()
	}
}

func (e fakeEvtchn) close() error {
	e.x.mu.Lock()
	defer e.x.mu.Unlock()
	if e.p.closed {
		return errors.New("fake xen: port closed twice")
	}
	e.p.closed = true
	if e.p.peer != nil {
		e.p.peer.peer = nil
	}
	delete(e.x.ports, e.p.port)
	return nil
}

func (d fakeDom) share(remote uint32, n int, writable bool) (pages, error) {
	d.x.mu.Lock()
	defer d.x.mu.Unlock()
	if err := d.x.step(); err != nil {
		return nil, err
	}
	mem, err := unix.Mmap(-1, 0, n*pageSize, unix.PROT_READ|unix.PROT_WRITE, unix.MAP_SHARED|unix.MAP_ANONYMOUS)
	if err != nil {
		return nil, err
	}
	run := &fakeRun{mem: mem, refs: n}
	s := &fakePages{x: d.x, mem: mem}
	for i := range n {
		ref := d.x.nextRef
		d.x.nextRef++
		d.x.grants[ref] = &fakeGrant{owner: d.id, grantee: remote, alloc: run, idx: i, writable: writable}
		s.grefs = append(s.grefs, ref)
	}
	s.own = true
	return s, nil
}

func (d fakeDom) mapGrants(remote uint32, refs []uint32, writable bool) (pages, error) {
	d.x.mu.Lock()
	defer d.x.mu.Unlock()
	if err := d.x.step(); err != nil {
		return nil, err
	}
	var first *fakeGrant
	for i, ref := range refs {
		g := d.x.grants[ref]
		switch {
		case g == nil || g.ended || g.owner != remote || g.grantee != d.id:
			return nil, fmt.Errorf("fake xen: dom%d cannot map grant %d of dom%d", d.id, ref, remote)
		case writable && !g.writable:
			return nil, fmt.Errorf("fake xen: grant %d is read-only", ref)
		case i == 0:
			first = g
		case g.alloc != first.alloc || g.idx != first.idx+i:
			return nil, errors.New("fake xen: can only map runs of pages shared together")
		}
	}
	for _, ref := range refs {
		d.x.grants[ref].maps++
	}
	d.x.mapped++
	return &fakePages{x: d.x, mem: first.alloc.mem[first.idx*pageSize : (first.idx+len(refs))*pageSize], grefs: refs}, nil
}

// fakePages is shared (own) or mapped pages.
type fakePages struct {
	x          *fakeXen
	mem        []byte
	grefs      []uint32
	own        bool
	notifyOff  int
	notifyPort *fakePort
	closed     bool
}

func (p *fakePages) bytes() []byte { return p.mem }

func (p *fakePages) refs() []uint32 {
	if !p.own {
		return nil
	}
	return p.grefs
}

func (p *fakePages) notifyOnUnmap(offset int, port uint32) error {
	p.x.mu.Lock()
	defer p.x.mu.Unlock()
	if err := p.x.step(); err != nil {
		return err
	}
	fp := p.x.ports[port]
	if fp == nil || offset < 0 || offset >= len(p.mem) {
		return fmt.Errorf("fake xen: bad unmap notification (byte %d, port %d)", offset, port)
	}
	p.notifyOff, p.notifyPort = offset, fp
	return nil
}

func (p *fakePages) close() error {
	p.x.mu.Lock()
	defer p.x.mu.Unlock()
	if p.closed {
		return errors.New("fake xen: pages closed twice")
	}
	p.closed = true
	if p.notifyPort != nil {
		// The kernel's plain byte store, done atomically on its word
		// because the test's Conns use atomics there.
		word := u32(p.mem, p.notifyOff&^3)
		atomic.AndUint32(word, ^(uint32(0xff) << (8 * (p.notifyOff & 3))))
		p.x.send(p.notifyPort)
	}
	for _, ref := range p.grefs {
		g := p.x.grants[ref]
		if p.own {
			g.ended = true
		} else {
			g.maps--
		}
		if g.ended && g.maps == 0 {
			delete(p.x.grants, ref)
			if g.alloc.refs--; g.alloc.refs == 0 {
				unix.Munmap(g.alloc.mem)
			}
		}
	}
	if !p.own {
		p.x.mapped--
	}
	return nil
}
