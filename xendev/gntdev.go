package xendev

import (
	"errors"
	"fmt"
	"os"
	"sync"
	"syscall"
	"unsafe"

	"golang.org/x/sys/unix"
)

// Gntdev is an open /dev/xen/gntdev, through which pages that other
// domains granted us are mapped. Close the Mappings before the Gntdev.
type Gntdev struct {
	f *os.File
}

// OpenGntdev opens /dev/xen/gntdev.
func OpenGntdev() (*Gntdev, error) {
	f, err := openDevice(GntdevPath)
	if err != nil {
		return nil, err
	}
	return &Gntdev{f: f}, nil
}

// Close closes the device. Mappings that are still mapped stay usable
// until their Close, which then fails to release the grants' slots (the
// kernel releases them with the last mapping).
func (g *Gntdev) Close() error {
	if err := g.f.Close(); err != nil {
		return fmt.Errorf("xendev: close %s: %w", GntdevPath, err)
	}
	return nil
}

// SetMaxGrants limits how many grants may be mapped at once through g; it
// must come before any Map. Newer kernels (Linux 6.1, for one) no longer
// have the ioctl, their limit being per Map call (the gntdev module's
// "limit" parameter): there the error wraps errors.ErrUnsupported.
func (g *Gntdev) SetMaxGrants(n uint32) error {
	arg := n
	if _, err := ioctl(g.f, ioctlGntdevSetMaxGrants, unsafe.Pointer(&arg)); err != nil {
		if errors.Is(err, syscall.ENOTTY) || errors.Is(err, syscall.ENOSYS) {
			return fmt.Errorf("xendev: gntdev: set max grants to %d: %w (%w)", n, errors.ErrUnsupported, err)
		}
		return fmt.Errorf("xendev: gntdev: set max grants to %d: %w", n, err)
	}
	return nil
}

// Mapping is a run of pages granted by another domain, mapped into this
// process contiguously.
type Mapping struct {
	g      *Gntdev
	domid  uint32
	index  uint64
	count  int
	mem    []byte
	mu     sync.Mutex
	closed bool
}

// Map maps the pages that domain domid granted us under refs, in that
// order, read-only or writable (a writable mapping of a read-only grant
// fails).
func (g *Gntdev) Map(domid uint32, refs []uint32, writable bool) (*Mapping, error) {
	n := len(refs)
	if n == 0 {
		return nil, fmt.Errorf("xendev: gntdev: map grants of domain %d: no grant references", domid)
	}
	// The ioctl takes a header (count, pad, index) then count
	// (domid, ref) pairs, each 8 bytes.
	buf := make([]uint64, 2+n)
	op := (*gntdevMapGrantRef)(unsafe.Pointer(&buf[0]))
	op.count = uint32(n)
	pairs := unsafe.Slice((*gntdevGrantRef)(unsafe.Pointer(&buf[2])), n)
	for i, r := range refs {
		pairs[i] = gntdevGrantRef{domid: domid, ref: r}
	}
	what := fmt.Sprintf("map %d grants of domain %d (first ref %d)", n, domid, refs[0])
	if _, err := ioctl(g.f, ioctlGntdevMapGrantRef, unsafe.Pointer(&buf[0])); err != nil {
		return nil, fmt.Errorf("xendev: gntdev: %s: %w", what, err)
	}
	m := &Mapping{g: g, domid: domid, index: op.index, count: n}
	prot := unix.PROT_READ
	if writable {
		prot |= unix.PROT_WRITE
	}
	// The grant hypercall happens here; a bad reference fails the mmap.
	mem, err := mmap(g.f, m.index, n*PageSize, prot)
	if err != nil {
		err = fmt.Errorf("xendev: gntdev: %s: mmap: %w", what, err)
		if uerr := m.release(); uerr != nil {
			err = errors.Join(err, uerr)
		}
		return nil, err
	}
	m.mem = mem
	return m, nil
}

// Bytes returns the mapped pages. The slice must not be used after Close.
func (m *Mapping) Bytes() []byte { return m.mem }

// SetUnmapNotify makes the kernel act when the mapping goes away (Close,
// or the process's end): with NotifyClearByte it zeroes the byte at offset
// (in the mapping), with NotifySendEvent it notifies port, which must be
// bound in this process. A second call replaces the first.
func (m *Mapping) SetUnmapNotify(offset int, action UnmapAction, port Port) error {
	if offset < 0 || offset >= m.count*PageSize {
		return fmt.Errorf("xendev: gntdev: unmap notification at byte %d of a %d-page mapping of domain %d: out of range", offset, m.count, m.domid)
	}
	arg := unmapNotify{index: m.index + uint64(offset), action: uint32(action), port: uint32(port)}
	if _, err := ioctl(m.g.f, ioctlGntdevSetUnmapNotify, unsafe.Pointer(&arg)); err != nil {
		return fmt.Errorf("xendev: gntdev: unmap notification at byte %d of a mapping of domain %d: %w", offset, m.domid, err)
	}
	return nil
}

// Close unmaps the pages and releases the grants' slots in the device; the
// unmap notification, if any, happens then.
func (m *Mapping) Close() error {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.closed {
		return ErrClosed
	}
	m.closed = true
	var errs []error
	if m.mem != nil {
		if err := unix.Munmap(m.mem); err != nil {
			errs = append(errs, fmt.Errorf("xendev: gntdev: munmap %d pages of domain %d: %w", m.count, m.domid, err))
		}
		m.mem = nil
	}
	if err := m.release(); err != nil {
		errs = append(errs, err)
	}
	return errors.Join(errs...)
}

// release removes the grants from the device's table.
func (m *Mapping) release() error {
	arg := gntdevUnmapGrantRef{index: m.index, count: uint32(m.count)}
	if _, err := ioctl(m.g.f, ioctlGntdevUnmapGrantRef, unsafe.Pointer(&arg)); err != nil {
		return fmt.Errorf("xendev: gntdev: release %d grants of domain %d: %w", m.count, m.domid, err)
	}
	return nil
}
