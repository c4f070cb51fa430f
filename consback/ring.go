// Package consback is a Xen PV console backend for dom0, in pure Go: it
// serves the consoles of one domain and copies what the domain prints to
// a writer of the caller's choice, reading nothing else the domain wrote
// but the ring's indices and, for a secondary console, the frontend's
// ring reference, event channel and state (the integers every PV backend
// takes from its frontend), all checked before use.
//
// The ring is xen/include/public/io/console.h's xencons_interface: a
// 1024-byte input ring, a 2048-byte output ring and four 32-bit indices,
// at the start of a page the domain shares. The primary console's page
// is granted by the toolstack under the reserved grant reference 0 and
// its event channel is the one libxl recorded (read-only to the domain);
// a secondary console (Linux's hvc_xen frontend) grants a page of its own
// and goes through the xenbus handshake.
//
// qvm runs it for its HVM stubdomains (cmd/qvm-stubdom-dm), whose
// consoles libxl 4.17 would otherwise have a root QEMU in dom0 serve.
package consback

import (
	"errors"
	"sync/atomic"
	"unsafe"
)

// Layout of struct xencons_interface.
const (
	inSize     = 1024
	outSize    = 2048
	outOff     = inSize
	offInCons  = inSize + outSize
	offInProd  = offInCons + 4
	offOutCons = inSize + outSize + 8
	offOutProd = offOutCons + 4
	// RingBytes is the size of the ring structure at the page's start.
	RingBytes = offOutProd + 4
)

// ErrCorruptRing says that the domain left indices that cannot be: more
// unread output than the ring holds. What they claim is dropped and
// reading goes on from the producer index.
var ErrCorruptRing = errors.New("console ring indices corrupt (the domain claims more output than the ring holds)")

// ErrCorruptInput says that the domain moved its input consumer index
// where no input was written: no input can go to it until it moves it
// back.
var ErrCorruptInput = errors.New("console input indices corrupt (the domain claims to have read input never written)")

// ring is the console ring in a shared page.
type ring struct {
	page []byte // at least RingBytes
}

func (r ring) index(off int) *uint32 {
	return (*uint32)(unsafe.Pointer(&r.page[off]))
}

// read copies the output the domain produced and the backend has not
// consumed into buf, which must hold outSize bytes, and marks it consumed.
// It returns how many bytes it copied. The domain owns the page and can
// change anything in it at any time: the indices are read once, checked,
// and only masked offsets are used.
func (r ring) read(buf []byte) (int, error) {
	cons := atomic.LoadUint32(r.index(offOutCons))
	prod := atomic.LoadUint32(r.index(offOutProd))
	n := prod - cons // wraps as the indices do
	if n > outSize {
		atomic.StoreUint32(r.index(offOutCons), prod)
		return 0, ErrCorruptRing
	}
	out := r.page[outOff : outOff+outSize]
	for i := uint32(0); i < n; i++ {
		buf[i] = out[(cons+i)&(outSize-1)]
	}
	// Go's atomics are sequentially consistent: the copy above happens
	// before the domain sees the space freed.
	atomic.StoreUint32(r.index(offOutCons), cons+n)
	return int(n), nil
}

// write puts as much of p as the input ring has room for and returns how
// many bytes it put. The producer index is the backend's and the consumer
// index the domain's: the domain can set its own to anything, so the room
// is computed from one read of each, checked, and only masked offsets are
// written.
func (r ring) write(p []byte) (int, error) {
	cons := atomic.LoadUint32(r.index(offInCons))
	prod := atomic.LoadUint32(r.index(offInProd))
	used := prod - cons
	if used > inSize {
		return 0, ErrCorruptInput
	}
	n := min(uint32(len(p)), inSize-used)
	in := r.page[:inSize]
	for i := uint32(0); i < n; i++ {
		in[(prod+i)&(inSize-1)] = p[i]
	}
	// The bytes are in place before the domain sees the index move.
	atomic.StoreUint32(r.index(offInProd), prod+n)
	return int(n), nil
}
