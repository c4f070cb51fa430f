package consback

import (
	"bytes"
	"encoding/binary"
	"errors"
	"testing"
)

// frontend writes into a ring page as Linux's hvc_xen does.
type frontend struct{ page []byte }

func (f frontend) write(p []byte) int {
	cons := binary.LittleEndian.Uint32(f.page[offOutCons:])
	prod := binary.LittleEndian.Uint32(f.page[offOutProd:])
	n := 0
	for n < len(p) && prod-cons < outSize {
		f.page[outOff+int(prod&(outSize-1))] = p[n]
		prod++
		n++
	}
	binary.LittleEndian.PutUint32(f.page[offOutProd:], prod)
	return n
}

func setIndices(page []byte, cons, prod uint32) {
	binary.LittleEndian.PutUint32(page[offOutCons:], cons)
	binary.LittleEndian.PutUint32(page[offOutProd:], prod)
}

func TestRingRead(t *testing.T) {
	page := make([]byte, 4096)
	// Start near the top of the index space, so that the indices wrap.
	setIndices(page, 0xFFFFFF00, 0xFFFFFF00)
	f, r := frontend{page}, ring{page}
	buf := make([]byte, outSize)
	var got []byte
	want := bytes.Repeat([]byte("stubdomain log line\n"), 700) // > 6 rings' worth
	for rest := want; len(rest) > 0; {
		rest = rest[f.write(rest):]
		n, err := r.read(buf)
		if err != nil {
			t.Fatal(err)
		}
		got = append(got, buf[:n]...)
	}
	if !bytes.Equal(got, want) {
		t.Fatalf("read %d bytes, not what was written (%d bytes)", len(got), len(want))
	}
	if n, err := r.read(buf); n != 0 || err != nil {
		t.Errorf("empty ring: read %d, %v", n, err)
	}
	if cons := binary.LittleEndian.Uint32(page[offOutCons:]); cons != 0xFFFFFF00+uint32(len(want)) {
		t.Errorf("out_cons %#x after %d bytes", cons, len(want))
	}
}

func TestRingReadFullRing(t *testing.T) {
	page := make([]byte, 4096)
	f, r := frontend{page}, ring{page}
	if n := f.write(bytes.Repeat([]byte{'x'}, 5000)); n != outSize {
		t.Fatalf("frontend wrote %d", n)
	}
	buf := make([]byte, outSize)
	if n, err := r.read(buf); n != outSize || err != nil {
		t.Fatalf("full ring: read %d, %v", n, err)
	}
}

func TestRingReadCorrupt(t *testing.T) {
	page := make([]byte, 4096)
	setIndices(page, 10, 10+outSize+1)
	r := ring{page}
	buf := make([]byte, outSize)
	if n, err := r.read(buf); n != 0 || !errors.Is(err, ErrCorruptRing) {
		t.Fatalf("corrupt indices: read %d, %v", n, err)
	}
	// The claimed output is dropped; the ring goes on from there.
	if cons := binary.LittleEndian.Uint32(page[offOutCons:]); cons != 10+outSize+1 {
		t.Errorf("out_cons %d after a corrupt read", cons)
	}
	f := frontend{page}
	f.write([]byte("after"))
	if n, err := r.read(buf); err != nil || string(buf[:n]) != "after" {
		t.Errorf("after a corrupt read: %q, %v", buf[:n], err)
	}
}

// FuzzRingRead: whatever the domain leaves in its page, read copies at
// most one ring's worth, never reads outside the ring, and leaves the
// consumer index at the producer's.
func FuzzRingRead(f *testing.F) {
	f.Add(uint32(0), uint32(5), []byte("hello"))
	f.Add(uint32(0xFFFFFFF0), uint32(0x10), []byte("wrap"))
	f.Add(uint32(7), uint32(3), []byte{})
	f.Fuzz(func(t *testing.T, cons, prod uint32, data []byte) {
		page := make([]byte, RingBytes)
		copy(page[outOff:outOff+outSize], data)
		setIndices(page, cons, prod)
		buf := make([]byte, outSize)
		n, err := ring{page}.read(buf)
		if n < 0 || n > outSize {
			t.Fatalf("read %d bytes", n)
		}
		if err == nil && uint32(n) != prod-cons {
			t.Fatalf("read %d of %d", n, prod-cons)
		}
		if got := binary.LittleEndian.Uint32(page[offOutCons:]); got != prod {
			t.Fatalf("out_cons %d, prod %d", got, prod)
		}
	})
}

func TestUserFor(t *testing.T) {
	for _, id := range []uint32{1, 2, 0x7FEF, 0x7FF0, 0xFFFFFFFF} {
		u := UserFor(id)
		if u < UIDBase || u >= 0x7FFE0000 {
			t.Errorf("UserFor(%d) = %#x, outside %#x..0x7FFDFFFF", id, u, UIDBase)
		}
	}
	if UserFor(1) == UserFor(2) {
		t.Error("two domains share a user")
	}
}

// readInput consumes the input ring as Linux's hvc_xen does.
func (f frontend) readInput(max int) []byte {
	cons := binary.LittleEndian.Uint32(f.page[offInCons:])
	prod := binary.LittleEndian.Uint32(f.page[offInProd:])
	var out []byte
	for cons != prod && len(out) < max {
		out = append(out, f.page[cons&(inSize-1)])
		cons++
	}
	binary.LittleEndian.PutUint32(f.page[offInCons:], cons)
	return out
}

func TestRingWrite(t *testing.T) {
	page := make([]byte, 4096)
	binary.LittleEndian.PutUint32(page[offInCons:], 0xFFFFFF80)
	binary.LittleEndian.PutUint32(page[offInProd:], 0xFFFFFF80)
	f, r := frontend{page}, ring{page}
	want := bytes.Repeat([]byte("typed on the console\r"), 300) // > 6 rings' worth
	var got []byte
	for rest := want; len(rest) > 0; {
		n, err := r.write(rest)
		if err != nil {
			t.Fatal(err)
		}
		if n > inSize {
			t.Fatalf("wrote %d into a %d-byte ring", n, inSize)
		}
		rest = rest[n:]
		got = append(got, f.readInput(700)...)
	}
	got = append(got, f.readInput(inSize)...)
	if !bytes.Equal(got, want) {
		t.Fatalf("the domain read %d bytes, not what was written (%d)", len(got), len(want))
	}
	// A full ring takes nothing more.
	r.write(bytes.Repeat([]byte{'x'}, 2*inSize))
	if n, err := r.write([]byte("y")); n != 0 || err != nil {
		t.Errorf("full ring: wrote %d, %v", n, err)
	}
}

// FuzzRingWrite: whatever the domain leaves in its consumer index, write
// puts at most the room the indices leave, never writes outside the
// input ring, and moves only the producer index, by what it wrote.
func FuzzRingWrite(f *testing.F) {
	f.Add(uint32(0), uint32(0), []byte("hello"))
	f.Add(uint32(5), uint32(3), []byte("a"))
	f.Add(uint32(0xFFFFFFF0), uint32(0x10), bytes.Repeat([]byte{'z'}, 2000))
	f.Fuzz(func(t *testing.T, cons, prod uint32, data []byte) {
		page := make([]byte, RingBytes)
		for i := inSize; i < RingBytes; i++ {
			page[i] = 0xAA
		}
		binary.LittleEndian.PutUint32(page[offInCons:], cons)
		binary.LittleEndian.PutUint32(page[offInProd:], prod)
		n, err := ring{page}.write(data)
		if n < 0 || n > len(data) || n > inSize {
			t.Fatalf("wrote %d of %d", n, len(data))
		}
		if used := prod - cons; used > inSize && (err == nil || n != 0) {
			t.Fatalf("corrupt indices %d/%d: wrote %d, %v", cons, prod, n, err)
		} else if used <= inSize && uint32(n) != min(uint32(len(data)), inSize-used) {
			t.Fatalf("wrote %d, room %d, asked %d", n, inSize-used, len(data))
		}
		if got := binary.LittleEndian.Uint32(page[offInProd:]); got != prod+uint32(n) {
			t.Fatalf("in_prod %d after writing %d from %d", got, n, prod)
		}
		if got := binary.LittleEndian.Uint32(page[offInCons:]); got != cons {
			t.Fatalf("in_cons moved: %d", got)
		}
		for i := inSize; i < offInCons; i++ {
			if page[i] != 0xAA {
				t.Fatalf("wrote at %d, outside the input ring", i)
			}
		}
	})
}
