package vmkernel

import (
	"bytes"
	"compress/gzip"
	"debug/elf"
	"encoding/binary"
	"errors"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/klauspost/compress/zstd"

	"github.com/qvm-project/qvm/internal/testenv"
)

// fakeELF is a stand-in kernel image: an ELF magic and some bytes.
var fakeELF = append([]byte("\x7fELF"), bytes.Repeat([]byte("kernel text "), 5000)...)

// bzImage wraps a payload in a minimal boot-protocol 2.15 header with one
// setup sector.
func bzImage(payload []byte) []byte {
	img := make([]byte, 2*512)
	img[0x1f1] = 1
	copy(img[0x202:], "HdrS")
	binary.LittleEndian.PutUint16(img[0x206:], 0x020f)
	binary.LittleEndian.PutUint32(img[0x248:], 0)
	binary.LittleEndian.PutUint32(img[0x24c:], uint32(len(payload)))
	return append(img, payload...)
}

func withSize(b []byte, n int) []byte {
	return binary.LittleEndian.AppendUint32(append([]byte(nil), b...), uint32(n))
}

func gzipped(t *testing.T, b []byte) []byte {
	var buf bytes.Buffer
	w := gzip.NewWriter(&buf)
	w.Write(b)
	w.Close()
	return buf.Bytes()
}

func zstded(t *testing.T, b []byte) []byte {
	w, err := zstd.NewWriter(nil)
	if err != nil {
		t.Fatal(err)
	}
	return withSize(w.EncodeAll(b, nil), len(b))
}

func TestUnpackFormats(t *testing.T) {
	for name, payload := range map[string][]byte{"gzip": gzipped(t, fakeELF), "zstd": zstded(t, fakeELF)} {
		got, err := Unpack(bzImage(payload))
		if err != nil || !bytes.Equal(got, fakeELF) {
			t.Errorf("%s: %d bytes, %v", name, len(got), err)
		}
	}
}

func TestUnpackRefuses(t *testing.T) {
	notELF := []byte("MZ not an ELF image at all, just bytes")
	zw, _ := zstd.NewWriter(nil)
	for name, tc := range map[string]struct {
		img  []byte
		want string
	}{
		"no header":    {make([]byte, 4096), "no boot-protocol header"},
		"old protocol": {func() []byte { b := bzImage(gzipped(t, fakeELF)); b[0x206] = 0x04; b[0x207] = 0x02; return b }(), "boot protocol 2.04"},
		"outside": {func() []byte {
			b := bzImage(gzipped(t, fakeELF))
			binary.LittleEndian.PutUint32(b[0x24c:], 1<<30)
			return b
		}(), "outside"},
		"lz4":        {bzImage(withSize([]byte{0x02, 0x21, 0x4c, 0x18, 1, 2, 3, 4}, 8)), "payload starts with"},
		"not elf":    {bzImage(gzipped(t, notELF)), "not an ELF image"},
		"wrong size": {bzImage(withSize(zw.EncodeAll(fakeELF, nil), 12)), "the image says 12"},
		"truncated":  {bzImage(func() []byte { g := gzipped(t, fakeELF); return g[:len(g)/2] }()), "gzip payload"},
	} {
		_, err := Unpack(tc.img)
		if err == nil || !bytes.Contains([]byte(err.Error()), []byte(tc.want)) {
			t.Errorf("%s: %v, want an error with %q", name, err, tc.want)
		}
	}
}

// TestUnpackDebianKernel unpacks the Debian kernel the test bed boots
// (xz with the x86 filter, as Debian builds it): the result is the ELF
// Xen's domain builder would load, with the Xen notes a PVH guest needs.
func TestUnpackDebianKernel(t *testing.T) {
	kernel := filepath.Join("..", "build", "dom0", "vmlinuz")
	testenv.RequireFile(t, kernel)
	data, err := os.ReadFile(kernel)
	if err != nil {
		t.Fatal(err)
	}
	p, err := ParseHeader(data, int64(len(data)))
	if err != nil {
		t.Fatal(err)
	}
	if f := format(data[p.Offset:]); f != "xz" {
		t.Logf("the Debian kernel's payload is %s", f)
	}
	out, err := Unpack(data)
	if err != nil {
		t.Fatal(err)
	}
	f, err := elf.NewFile(bytes.NewReader(out))
	if err != nil {
		t.Fatal(err)
	}
	xenNotes := false
	for _, prog := range f.Progs {
		if prog.Type != elf.PT_NOTE {
			continue
		}
		b := make([]byte, prog.Filesz)
		prog.ReadAt(b, 0)
		xenNotes = xenNotes || bytes.Contains(b, []byte("Xen\x00"))
	}
	if f.Machine != elf.EM_X86_64 || !xenNotes {
		t.Errorf("unpacked kernel: machine %v, Xen notes %v", f.Machine, xenNotes)
	}
}

func TestEnsure(t *testing.T) {
	dir := t.TempDir()
	kernel := filepath.Join(dir, "vmlinuz")
	if err := os.WriteFile(kernel, bzImage(zstded(t, fakeELF)), 0o644); err != nil {
		t.Fatal(err)
	}
	if Fresh(kernel) != "" {
		t.Fatal("fresh before Ensure")
	}
	u, err := Ensure(kernel)
	if err != nil {
		t.Fatal(err)
	}
	if b, _ := os.ReadFile(u); !bytes.Equal(b, fakeELF) || Fresh(kernel) != u {
		t.Fatalf("%s: %d bytes, fresh %q", u, len(b), Fresh(kernel))
	}
	// A second Ensure keeps the file; a new kernel makes a new one.
	before, _ := os.Stat(u)
	if _, err := Ensure(kernel); err != nil {
		t.Fatal(err)
	}
	if after, _ := os.Stat(u); !os.SameFile(before, after) {
		t.Error("Ensure rewrote a fresh image")
	}
	other := append([]byte("\x7fELF"), bytes.Repeat([]byte("newer kernel "), 100)...)
	if err := os.WriteFile(kernel, bzImage(gzipped(t, other)), 0o644); err != nil {
		t.Fatal(err)
	}
	later := time.Now().Add(time.Minute)
	os.Chtimes(kernel, later, later)
	if Fresh(kernel) != "" {
		t.Fatal("an image of the old kernel counts as fresh")
	}
	if _, err := Ensure(kernel); err != nil {
		t.Fatal(err)
	}
	if b, _ := os.ReadFile(u); !bytes.Equal(b, other) {
		t.Error("Ensure did not unpack the new kernel")
	}
	// A kernel that is not a bzImage: an error, and nothing written.
	bad := filepath.Join(t.TempDir(), "vmlinuz")
	os.WriteFile(bad, []byte("not a kernel"), 0o644)
	if _, err := Ensure(bad); !errors.Is(err, ErrNotBzImage) {
		t.Errorf("Ensure of a non-kernel: %v", err)
	}
	if ents, _ := os.ReadDir(filepath.Dir(bad)); len(ents) != 1 {
		t.Errorf("left files: %v", ents)
	}
}

// FuzzUnpack feeds arbitrary images (a VM kernel comes from the user) to
// the header parser and the decompressors.
func FuzzUnpack(f *testing.F) {
	f.Add(bzImage(gzipped(nil, fakeELF)))
	f.Add(bzImage(withSize([]byte{0xfd, '7', 'z', 'X', 'Z', 0, 0, 4}, 4)))
	f.Add(make([]byte, 0x300))
	f.Fuzz(func(t *testing.T, data []byte) {
		out, err := Unpack(data)
		if err == nil && !bytes.HasPrefix(out, []byte("\x7fELF")) {
			t.Fatalf("accepted a non-ELF result")
		}
	})
}
