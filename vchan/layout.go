package vchan

import (
	"encoding/binary"
	"fmt"
)

// The shared page (struct vchan_interface of Xen's libxenvchan), all
// fields little-endian:
//
//	 0  left ring:  u32 cons, u32 prod   (client writes, server reads)
//	 8  right ring: u32 cons, u32 prod   (server writes, client reads)
//	16  u16 left_order, u16 right_order
//	20  u8 cli_live, srv_live, cli_notify, srv_notify
//	24  u32 grants[]: the extra pages of the left ring, then of the right
//
// A ring of order 10 lives in the shared page at offset 1024, one of order
// 11 at offset 2048; a ring of order 12 or more lives in 2^(order-12)
// extra granted pages. Ring indexes run freely and wrap at 2^32; a byte's
// place in its ring is its index modulo the ring's size.
const (
	pageSize      = 4096
	offLeft       = 0
	offRight      = 8
	offLeftOrder  = 16
	offRightOrder = 18
	offFlags      = 20 // the 32-bit word holding the four u8 flags
	offGrants     = 24

	// Within the flags word, on a little-endian machine, the bit position
	// of each byte.
	shiftCliLive   = 0
	shiftSrvLive   = 8
	shiftCliNotify = 16
	shiftSrvNotify = 24

	// Byte offsets of the live flags, for the unmap notifications.
	offCliLive = offFlags + shiftCliLive/8
	offSrvLive = offFlags + shiftSrvLive/8
)

// Notify bits: a side that waits sets one in the other side's notify byte;
// the other side clears it and sends an event when it did that thing.
const (
	notifyWrite = 1 // tell me when you wrote (I wait for data)
	notifyRead  = 2 // tell me when you read (I wait for room)
)

// Live flag values.
const (
	liveGone    = 0 // closed, or crashed
	liveUp      = 1 // connected
	liveWaiting = 2 // cli_live only: no client yet
)

// Ring orders (log2 of a ring's size in bytes) that a channel may use.
// Xen's libxenvchan accepts the same range.
const (
	MinOrder = 10
	MaxOrder = 20
)

// layout is the pair of ring orders of a channel.
type layout struct {
	left, right int // left: client to server; right: server to client
}

// ringPages returns how many extra pages a ring of the given order needs:
// none for the rings inside the shared page.
func ringPages(order int) int {
	if order < 12 {
		return 0
	}
	return 1 << (order - 12)
}

// inPageOffset returns where in the shared page a ring of order 10 or 11
// lives, or 0 for a ring in its own pages.
func inPageOffset(order int) int {
	switch order {
	case 10:
		return 1024
	case 11:
		return 2048
	}
	return 0
}

// grants returns the number of extra pages of both rings.
func (l layout) grants() int { return ringPages(l.left) + ringPages(l.right) }

// check says whether the two rings and the grant list fit the page
// without overlapping.
func (l layout) check() error {
	for _, o := range []int{l.left, l.right} {
		if o < MinOrder || o > MaxOrder {
			return fmt.Errorf("ring order %d out of range [%d, %d]", o, MinOrder, MaxOrder)
		}
	}
	if l.left == l.right && l.left < 12 {
		return fmt.Errorf("both rings of order %d would share the same place in the page", l.left)
	}
	end := pageSize // the grant list must end before the first in-page ring
	for _, o := range []int{l.left, l.right} {
		if off := inPageOffset(o); off != 0 {
			end = min(end, off)
		}
	}
	if need := offGrants + 4*l.grants(); need > end {
		return fmt.Errorf("ring orders %d and %d need %d grants, which do not fit before byte %d of the page", l.left, l.right, l.grants(), end)
	}
	return nil
}

// writeHeader lays out a fresh shared page for a server: zeroed, ring
// orders, the grant list, no client yet, the server live, and a request
// that the client tell us when it writes. l must be valid and grants hold
// l.grants() references.
func writeHeader(page []byte, l layout, grants []uint32) {
	clear(page[:pageSize])
	binary.LittleEndian.PutUint16(page[offLeftOrder:], uint16(l.left))
	binary.LittleEndian.PutUint16(page[offRightOrder:], uint16(l.right))
	for i, g := range grants {
		binary.LittleEndian.PutUint32(page[offGrants+4*i:], g)
	}
	page[offCliLive] = liveWaiting
	page[offSrvLive] = liveUp
	page[offFlags+shiftCliNotify/8] = notifyWrite
}

// readHeader reads, once, what a client needs from a server's shared page
// (which the server may change at any time): the ring orders and the
// grant list. It refuses a layout Xen's libxenvchan would not make.
func readHeader(page []byte) (layout, []uint32, error) {
	if len(page) < pageSize {
		return layout{}, nil, fmt.Errorf("shared page of %d bytes, want %d", len(page), pageSize)
	}
	l := layout{
		left:  int(binary.LittleEndian.Uint16(page[offLeftOrder:])),
		right: int(binary.LittleEndian.Uint16(page[offRightOrder:])),
	}
	if err := l.check(); err != nil {
		return layout{}, nil, err
	}
	grants := make([]uint32, l.grants()) // at most 1018: check bounds it
	for i := range grants {
		grants[i] = binary.LittleEndian.Uint32(page[offGrants+4*i:])
	}
	return l, grants, nil
}
