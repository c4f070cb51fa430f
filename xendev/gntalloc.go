package xendev

import (
	"errors"
	"fmt"
	"os"
	"sync"
	"unsafe"

	"golang.org/x/sys/unix"
)

// Gntalloc is an open /dev/xen/gntalloc, through which pages of this
// domain are granted to another. Close the Shared pages before the
// Gntalloc.
type Gntalloc struct {
	f *os.File
}

// OpenGntalloc opens /dev/xen/gntalloc.
func OpenGntalloc() (*Gntalloc, error) {
	f, err := openDevice(GntallocPath)
	if err != nil {
		return nil, err
	}
	return &Gntalloc{f: f}, nil
}

// Close closes the device. Grants of pages not yet closed end when their
// mapping goes away.
func (g *Gntalloc) Close() error {
	if err := g.f.Close(); err != nil {
		return fmt.Errorf("xendev: close %s: %w", GntallocPath, err)
	}
	return nil
}

// gntallocFlagWritable is GNTALLOC_FLAG_WRITABLE.
const gntallocFlagWritable = 1

// maxDomid is the largest domain id the allocation ioctl can name (its
// field is 16 bits wide).
const maxDomid = 0xffff

// Shared is a run of zeroed pages of this domain, each granted to one
// other domain, mapped into this process contiguously.
type Shared struct {
	g      *Gntalloc
	domid  uint32
	index  uint64
	refs   []uint32
	mem    []byte
	mu     sync.Mutex
	closed bool
}

// Alloc allocates count zeroed pages, grants each to domain domid
// (writable by it, or read-only) and maps them here, writable.
func (g *Gntalloc) Alloc(domid uint32, count int, writable bool) (*Shared, error) {
	what := fmt.Sprintf("grant %d pages to domain %d", count, domid)
	if count <= 0 {
		return nil, fmt.Errorf("xendev: gntalloc: %s: need at least one page", what)
	}
	if domid > maxDomid {
		return nil, fmt.Errorf("xendev: gntalloc: %s: domain id out of range", what)
	}
	// Header (domid, flags, count, index) of 16 bytes, then count u32
	// grant ids written by the kernel; at least the C struct's 24 bytes.
	words := max(3, 2+(count+1)/2)
	buf := make([]uint64, words)
	op := (*gntallocAllocGref)(unsafe.Pointer(&buf[0]))
	op.domid = uint16(domid)
	if writable {
		op.flags = gntallocFlagWritable
	}
	op.count = uint32(count)
	if _, err := ioctl(g.f, ioctlGntallocAllocGref, unsafe.Pointer(&buf[0])); err != nil {
		return nil, fmt.Errorf("xendev: gntalloc: %s: %w", what, err)
	}
	s := &Shared{g: g, domid: domid, index: op.index}
	s.refs = append([]uint32(nil), unsafe.Slice((*uint32)(unsafe.Pointer(&buf[2])), count)...)
	mem, err := mmap(g.f, s.index, count*PageSize, unix.PROT_READ|unix.PROT_WRITE)
	if err != nil {
		err = fmt.Errorf("xendev: gntalloc: %s: mmap: %w", what, err)
		if derr := s.dealloc(); derr != nil {
			err = errors.Join(err, derr)
		}
		return nil, err
	}
	s.mem = mem
	return s, nil
}

// Refs returns the grant references of the pages, in order.
func (s *Shared) Refs() []uint32 { return s.refs }

// Bytes returns the pages. The slice must not be used after Close.
func (s *Shared) Bytes() []byte { return s.mem }

// SetUnmapNotify makes the kernel act when the pages are freed (Close, or
// the process's end): with NotifyClearByte it zeroes the byte at offset
// (in the run), with NotifySendEvent it notifies port, which must be bound
// in this process. A second call replaces the first.
func (s *Shared) SetUnmapNotify(offset int, action UnmapAction, port Port) error {
	if offset < 0 || offset >= len(s.refs)*PageSize {
		return fmt.Errorf("xendev: gntalloc: unmap notification at byte %d of %d pages granted to domain %d: out of range", offset, len(s.refs), s.domid)
	}
	arg := unmapNotify{index: s.index + uint64(offset), action: uint32(action), port: uint32(port)}
	if _, err := ioctl(s.g.f, ioctlGntallocSetUnmapNotify, unsafe.Pointer(&arg)); err != nil {
		return fmt.Errorf("xendev: gntalloc: unmap notification at byte %d of pages granted to domain %d: %w", offset, s.domid, err)
	}
	return nil
}

// Close unmaps the pages and gives up the grants. A grant the other domain
// still maps ends when it unmaps it; the unmap notification, if any,
// happens when the pages are freed.
func (s *Shared) Close() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return ErrClosed
	}
	s.closed = true
	var errs []error
	if s.mem != nil {
		if err := unix.Munmap(s.mem); err != nil {
			errs = append(errs, fmt.Errorf("xendev: gntalloc: munmap %d pages granted to domain %d: %w", len(s.refs), s.domid, err))
		}
		s.mem = nil
	}
	if err := s.dealloc(); err != nil {
		errs = append(errs, err)
	}
	return errors.Join(errs...)
}

// dealloc drops the device's reference on the grants.
func (s *Shared) dealloc() error {
	arg := gntallocDeallocGref{index: s.index, count: uint32(len(s.refs))}
	if _, err := ioctl(s.g.f, ioctlGntallocDeallocGref, unsafe.Pointer(&arg)); err != nil {
		return fmt.Errorf("xendev: gntalloc: give up %d grants to domain %d: %w", len(s.refs), s.domid, err)
	}
	return nil
}
