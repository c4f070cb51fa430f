package vmkernel

import (
	"bytes"
	"compress/flate"
	"compress/gzip"
	"context"
	"debug/elf"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/klauspost/compress/zstd"
	"golang.org/x/sys/unix"

	"github.com/qvm-project/qvm/internal/crashdisk"
	"github.com/qvm-project/qvm/internal/testenv"
	kt "github.com/qvm-project/qvm/vmkernel/vmkerneltest"
)

// fakeELF is a stand-in kernel image: an ELF magic and some bytes.
var fakeELF = kt.ELF("kernel text ", 5000)

func unpack(img []byte) ([]byte, error) {
	var out bytes.Buffer
	_, err := Unpack(context.Background(), &out, bytes.NewReader(img), int64(len(img)))
	return out.Bytes(), err
}

func TestUnpackFormats(t *testing.T) {
	for name, payload := range map[string][]byte{"gzip": kt.Gzip(fakeELF), "xz": kt.Xz(fakeELF), "zstd": kt.Zstd(fakeELF)} {
		got, err := unpack(kt.BzImage(payload))
		if err != nil || !bytes.Equal(got, fakeELF) {
			t.Errorf("%s: %d bytes, %v", name, len(got), err)
		}
	}
}

func TestUnpackRefuses(t *testing.T) {
	notELF := bytes.Repeat([]byte("MZ not an ELF image at all, just bytes "), 4)
	zw, _ := zstd.NewWriter(nil)
	for name, tc := range map[string]struct {
		img  []byte
		want string
	}{
		"no header":    {make([]byte, 4096), "no boot-protocol header"},
		"short":        {make([]byte, 100), "too short"},
		"old protocol": {func() []byte { b := kt.BzImage(kt.Gzip(fakeELF)); b[0x206] = 0x04; b[0x207] = 0x02; return b }(), "boot protocol 2.04"},
		"outside": {func() []byte {
			b := kt.BzImage(kt.Gzip(fakeELF))
			binary.LittleEndian.PutUint32(b[0x24c:], 1<<30)
			return b
		}(), "outside"},
		"lz4":         {kt.BzImage(kt.WithSize([]byte{0x02, 0x21, 0x4c, 0x18, 1, 2, 3, 4}, 8)), "payload starts with"},
		"not elf":     {kt.BzImage(kt.Gzip(notELF)), "not an ELF image"},
		"wrong size":  {kt.BzImage(kt.WithSize(zw.EncodeAll(fakeELF, nil), 1000)), "more than the 1000 bytes it declares"},
		"short size":  {kt.BzImage(kt.WithSize(zw.EncodeAll(fakeELF, nil), int64(len(fakeELF)+1))), "the image says"},
		"tiny size":   {kt.BzImage(kt.WithSize(zw.EncodeAll(fakeELF, nil), 12)), "too few for an ELF image"},
		"huge size":   {kt.BzImage(kt.WithSize(zw.EncodeAll(fakeELF, nil), 1<<31)), "declares 2048 MiB unpacked"},
		"truncated":   {kt.BzImage(func() []byte { g := kt.Gzip(fakeELF); return g[:len(g)/2] }()), "gzip payload"},
		"bad xz":      {kt.BzImage(func() []byte { x := kt.Xz(fakeELF); x[len(x)/2] ^= 0xff; return x }()), "xz payload"},
		"zstd window": {kt.BzImage(zstdWindowBomb(t)), "zstd payload"},
	} {
		_, err := unpack(tc.img)
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%s: %v, want an error with %q", name, err, tc.want)
		}
	}
}

// zstdWindowBomb is a zstd frame that asks for a 1 GiB window (memory the
// decoder would allocate before producing a byte).
func zstdWindowBomb(t *testing.T) []byte {
	// Frame header: magic, a descriptor saying a window descriptor follows
	// (no content size), the window descriptor 2^(10+20); then a last raw
	// block of 4 bytes.
	f := []byte{0x28, 0xb5, 0x2f, 0xfd, 0x00, 20 << 3, 4<<3 | 1, 0, 0}
	f = append(f, "\x7fELF"...)
	return kt.WithSize(f, 4)
}

const mib = 1 << 20

// elfStart is one MiB that starts with the ELF magic, the rest zeros.
func elfStart() []byte {
	b := make([]byte, mib)
	copy(b, "\x7fELF")
	return b
}

// gzipBomb is a gzip payload of an ELF magic and then total bytes of
// zeros (total a multiple of 1 MiB), about 1 KiB per MiB, declaring
// declared bytes. It repeats one deflate segment (a sync-flushed run of
// blocks coding 1 MiB of zeros by back-references) without compressing
// the whole output.
func gzipBomb(t *testing.T, total, declared int64) []byte {
	var buf bytes.Buffer
	zw, err := flate.NewWriter(&buf, flate.BestCompression)
	if err != nil {
		t.Fatal(err)
	}
	zw.Write(elfStart())
	zw.Flush()
	first := append([]byte(nil), buf.Bytes()...)
	zw.Write(make([]byte, mib))
	zw.Flush()
	seg := buf.Bytes()[len(first):]
	out := append([]byte{0x1f, 0x8b, 8, 0, 0, 0, 0, 0, 0, 0xff}, first...)
	for i := int64(1); i < total/mib; i++ {
		out = append(out, seg...)
	}
	out = append(out, 0x03, 0x00, 0, 0, 0, 0) // final empty block, CRC
	return binary.LittleEndian.AppendUint32(out, uint32(declared))
}

// zstdBomb is a zstd payload of total bytes (a multiple of 1 MiB): one
// frame with the ELF magic, then one frame of 1 MiB of zeros repeated.
func zstdBomb(t *testing.T, total, declared int64) []byte {
	zw, _ := zstd.NewWriter(nil)
	out := zw.EncodeAll(elfStart(), nil)
	zeros := zw.EncodeAll(make([]byte, mib), nil)
	for i := int64(1); i < total/mib; i++ {
		out = append(out, zeros...)
	}
	return kt.WithSize(out, declared)
}

// xzBomb is an xz payload of total bytes (a multiple of 1 MiB): a stream
// header, one block with the ELF magic, then one block of 1 MiB of zeros
// repeated (blocks are independent; the index that would end the stream
// is never reached).
func xzBomb(t *testing.T, total, declared int64) []byte {
	blocks := func(stream []byte) []byte {
		stream = stream[:len(stream)-4] // the appended size
		footer := stream[len(stream)-12:]
		index := (int(binary.LittleEndian.Uint32(footer[4:])) + 1) * 4
		return stream[12 : len(stream)-12-index]
	}
	first := kt.Xz(elfStart())
	zeros := blocks(kt.Xz(make([]byte, mib)))
	out := append([]byte(nil), first[:12]...)
	out = append(out, blocks(first)...)
	for i := int64(1); i < total/mib; i++ {
		out = append(out, zeros...)
	}
	return kt.WithSize(append(out, make([]byte, 12)...), declared)
}

// allocated is the heap memory allocated while f runs (cumulative, so
// with no dependence on when the garbage collector runs): a bound on the
// peak heap f needs.
func allocated(f func()) uint64 {
	var before, after runtime.MemStats
	runtime.ReadMemStats(&before)
	f()
	runtime.ReadMemStats(&after)
	return after.TotalAlloc - before.TotalAlloc
}

// TestBombs: payloads that expand to GiBs from a few KiB or MiB are
// refused, without decompressing beyond the declared size (so quickly)
// and with bounded memory: less than the declared size, so the output is
// never held whole.
func TestBombs(t *testing.T) {
	const total = 4 << 30 // what each bomb expands to
	const declared = 64 << 20
	const memBound = 32 << 20
	for name, bomb := range map[string]func(*testing.T, int64, int64) []byte{
		"gzip": gzipBomb, "xz": xzBomb, "zstd": zstdBomb,
	} {
		t.Run(name, func(t *testing.T) {
			// The fixture is right: a small bomb declaring its true size
			// unpacks whole (the gzip one then fails its CRC, the xz one
			// has no index; the zstd one is well-formed).
			small := kt.BzImage(bomb(t, 3*mib, 3*mib))
			if out, err := unpack(small); len(out) != 3*mib || name == "zstd" && err != nil {
				t.Fatalf("a 3 MiB %s bomb declaring its size: %d bytes, %v", name, len(out), err)
			}
			img := kt.BzImage(bomb(t, total, declared))
			t.Logf("%s bomb: %d KiB expanding to %d GiB", name, len(img)>>10, total>>30)
			var n int64
			var err error
			used := allocated(func() {
				n, err = Unpack(context.Background(), io.Discard, bytes.NewReader(img), int64(len(img)))
			})
			if err == nil || !strings.Contains(err.Error(), "more than the 67108864 bytes it declares") {
				t.Errorf("Unpack: %v, want a refusal at the declared size", err)
			}
			if n != declared {
				t.Errorf("wrote %d bytes before refusing, want the declared %d", n, declared)
			}
			if used > memBound {
				t.Errorf("allocated %d MiB unpacking, want less than %d MiB", used>>20, memBound>>20)
			}
			// Declaring more than a kernel may have: refused before
			// decompressing anything.
			huge := kt.BzImage(bomb(t, total, total-1))
			used = allocated(func() {
				n, err = Unpack(context.Background(), io.Discard, bytes.NewReader(huge), int64(len(huge)))
			})
			if err == nil || !strings.Contains(err.Error(), "more than the 256 MiB a kernel may have") || n != 0 {
				t.Errorf("Unpack of a bomb declaring 4 GiB: %d bytes, %v", n, err)
			}
			if used > 1<<20 {
				t.Errorf("allocated %d KiB refusing a declared size, want no decompressor", used>>10)
			}
		})
	}
}

// TestEnsureBomb: a bomb as a VM kernel leaves no file behind.
func TestEnsureBomb(t *testing.T) {
	dir := t.TempDir()
	kernel := filepath.Join(dir, "vmlinuz")
	if err := os.WriteFile(kernel, kt.BzImage(gzipBomb(t, 1<<30, 8*mib)), 0o644); err != nil {
		t.Fatal(err)
	}
	if _, err := Ensure(context.Background(), kernel); err == nil || !strings.Contains(err.Error(), "more than the 8388608 bytes") {
		t.Errorf("Ensure: %v", err)
	}
	if ents, _ := os.ReadDir(dir); len(ents) != 1 {
		t.Errorf("left files: %v", ents)
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
	p, err := Inspect(bytes.NewReader(data), int64(len(data)))
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("the Debian kernel's payload: %s, %d MiB unpacked", p.Format, p.Unpacked>>20)
	dir := t.TempDir()
	if err := os.WriteFile(filepath.Join(dir, "vmlinuz"), data, 0o644); err != nil {
		t.Fatal(err)
	}
	var u string
	used := allocated(func() { u, err = Ensure(context.Background(), filepath.Join(dir, "vmlinuz")) })
	if err != nil {
		t.Fatal(err)
	}
	// Streaming: the xz dictionary (32 MiB for Linux's build) and
	// buffers, not the image.
	t.Logf("unpacking allocated %d MiB", used>>20)
	if used >= uint64(p.Unpacked) {
		t.Errorf("unpacking a %d MiB image allocated %d MiB", p.Unpacked>>20, used>>20)
	}
	out, err := os.ReadFile(u)
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

// storedGzip is b in stored (uncompressed) deflate blocks: its size
// depends on len(b) only.
func storedGzip(b []byte) []byte {
	var buf bytes.Buffer
	w, _ := gzip.NewWriterLevel(&buf, gzip.NoCompression)
	w.Write(b)
	w.Close()
	return buf.Bytes()
}

func TestEnsure(t *testing.T) {
	ctx := context.Background()
	dir := t.TempDir()
	kernel := filepath.Join(dir, "vmlinuz")
	if err := os.WriteFile(kernel, kt.BzImage(kt.Zstd(fakeELF)), 0o644); err != nil {
		t.Fatal(err)
	}
	if Fresh(kernel) != "" {
		t.Fatal("fresh before Ensure")
	}
	u, err := Ensure(ctx, kernel)
	if err != nil {
		t.Fatal(err)
	}
	if b, _ := os.ReadFile(u); !bytes.Equal(b, fakeELF) || Fresh(kernel) != u {
		t.Fatalf("%s: %d bytes, fresh %q", u, len(b), Fresh(kernel))
	}
	// A second Ensure keeps the file.
	before, _ := os.Stat(u)
	if _, err := Ensure(ctx, kernel); err != nil {
		t.Fatal(err)
	}
	if after, _ := os.Stat(u); !os.SameFile(before, after) {
		t.Error("Ensure rewrote a fresh image")
	}
	// The same kernel copied anew (another inode, another time): still
	// fresh, by content, and Ensure does not unpack it again.
	data, _ := os.ReadFile(kernel)
	os.Remove(kernel)
	os.WriteFile(kernel, data, 0o644)
	// The identity is recorded only once the file clock has moved past the
	// copy's change time (the racy-timestamp rule): wait for that.
	waitClockPast(t, kernel)
	if Fresh(kernel) != u {
		t.Error("a copy of the same kernel is not fresh")
	}
	if _, err := Ensure(ctx, kernel); err != nil {
		t.Fatal(err)
	}
	if after, _ := os.Stat(u); !os.SameFile(before, after) {
		t.Error("Ensure unpacked a copy of the same kernel again")
	}
	if _, cached, _ := fresh(kernel); !cached {
		t.Error("Ensure did not record the copy's identity")
	}
}

// TestEnsureSameSizeAndTime: a kernel overwritten in place by another of
// the same size, its modification time set back, is not taken for the
// old one.
func TestEnsureSameSizeAndTime(t *testing.T) {
	ctx := context.Background()
	kernel := filepath.Join(t.TempDir(), "vmlinuz")
	a, b := kt.ELF("kernel A ", 4000), kt.ELF("kernel B ", 4000)
	imgA, imgB := kt.BzImage(storedGzip(a)), kt.BzImage(storedGzip(b))
	if len(imgA) != len(imgB) {
		t.Fatalf("fixtures of %d and %d bytes", len(imgA), len(imgB))
	}
	if err := os.WriteFile(kernel, imgA, 0o644); err != nil {
		t.Fatal(err)
	}
	u, err := Ensure(ctx, kernel)
	if err != nil {
		t.Fatal(err)
	}
	old, _ := os.Stat(kernel)
	f, err := os.OpenFile(kernel, os.O_WRONLY, 0)
	if err != nil {
		t.Fatal(err)
	}
	f.WriteAt(imgB, 0)
	f.Close()
	os.Chtimes(kernel, old.ModTime(), old.ModTime())
	if now, _ := os.Stat(kernel); !os.SameFile(old, now) || now.Size() != old.Size() || !now.ModTime().Equal(old.ModTime()) {
		t.Fatal("the replacement kernel is not the same file of the same size and time")
	}
	if Fresh(kernel) != "" {
		t.Fatal("the image of the old kernel counts as fresh")
	}
	if _, err := Ensure(ctx, kernel); err != nil {
		t.Fatal(err)
	}
	if got, _ := os.ReadFile(u); !bytes.Equal(got, b) {
		t.Error("Ensure did not unpack the new kernel")
	}
	// A kernel that is not a bzImage: an error, and nothing written.
	bad := filepath.Join(t.TempDir(), "vmlinuz")
	os.WriteFile(bad, []byte("not a kernel"), 0o644)
	if _, err := Ensure(ctx, bad); !errors.Is(err, ErrNotBzImage) {
		t.Errorf("Ensure of a non-kernel: %v", err)
	}
	if ents, _ := os.ReadDir(filepath.Dir(bad)); len(ents) != 1 {
		t.Errorf("left files: %v", ents)
	}
}

// TestEnsureNoRecord: an image without its record (left by an older qvm,
// or by a crash between the image's rename and the record's) is not
// fresh, and Ensure makes both anew.
func TestEnsureNoRecord(t *testing.T) {
	dir := t.TempDir()
	kernel := filepath.Join(dir, "vmlinuz")
	os.WriteFile(kernel, kt.BzImage(kt.Gzip(fakeELF)), 0o644)
	os.WriteFile(filepath.Join(dir, UnpackedName), []byte("\x7fELF stale"), 0o644)
	os.WriteFile(filepath.Join(dir, ".vmlinux-123"), []byte("a killed unpack"), 0o644)
	if Fresh(kernel) != "" {
		t.Fatal("an image without a record is fresh")
	}
	u, err := Ensure(context.Background(), kernel)
	if err != nil {
		t.Fatal(err)
	}
	if b, _ := os.ReadFile(u); !bytes.Equal(b, fakeELF) || Fresh(kernel) != u {
		t.Errorf("after Ensure: %d bytes, fresh %q", len(b), Fresh(kernel))
	}
	ents, _ := os.ReadDir(dir)
	var names []string
	for _, e := range ents {
		names = append(names, e.Name())
	}
	if strings.Join(names, " ") != "vmlinux vmlinux.source vmlinuz" {
		t.Errorf("files: %v", names)
	}
}

// TestEnsureCancelled: a cancelled context stops an unpack.
func TestEnsureCancelled(t *testing.T) {
	kernel := filepath.Join(t.TempDir(), "vmlinuz")
	os.WriteFile(kernel, kt.BzImage(kt.Gzip(fakeELF)), 0o644)
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if _, err := Ensure(ctx, kernel); !errors.Is(err, context.Canceled) {
		t.Errorf("Ensure: %v", err)
	}
}

// FuzzUnpack feeds arbitrary images (a VM kernel comes from the user) to
// the header parser and the decompressors.
func FuzzUnpack(f *testing.F) {
	f.Add(kt.BzImage(kt.Gzip(fakeELF)))
	f.Add(kt.BzImage(kt.Xz(fakeELF[:200])))
	f.Add(kt.BzImage(kt.Zstd(fakeELF[:200])))
	f.Add(kt.BzImage(kt.WithSize([]byte{0xfd, '7', 'z', 'X', 'Z', 0, 0, 4}, 4)))
	f.Add(make([]byte, 0x300))
	f.Fuzz(func(t *testing.T, data []byte) {
		var out bytes.Buffer
		n, err := Unpack(context.Background(), &out, bytes.NewReader(data), int64(len(data)))
		if n != int64(out.Len()) {
			t.Fatalf("reported %d bytes, wrote %d", n, out.Len())
		}
		if err == nil && !bytes.HasPrefix(out.Bytes(), []byte("\x7fELF")) {
			t.Fatalf("accepted a non-ELF result")
		}
		if out.Len() > MaxUnpacked {
			t.Fatalf("wrote %d bytes", out.Len())
		}
	})
}

// FuzzInspect feeds arbitrary headers and payload ends to the header
// parser and the size checks: what they accept lies inside the file and
// declares a size a kernel may have.
func FuzzInspect(f *testing.F) {
	f.Add(kt.BzImage(kt.Gzip(fakeELF)))
	f.Add(kt.BzImage(kt.WithSize(kt.Zstd(fakeELF), 1<<31)))
	f.Add(kt.BzImage(kt.WithSize([]byte{0xfd, '7', 'z', 'X', 'Z', 0, 0, 4}, 100)))
	f.Fuzz(func(t *testing.T, data []byte) {
		size := int64(len(data))
		p, err := Inspect(bytes.NewReader(data), size)
		if err != nil {
			return
		}
		if p.Offset < 0x250 || p.Length < 8 || p.Offset+p.Length > size {
			t.Fatalf("accepted a payload at %d+%d in %d bytes", p.Offset, p.Length, size)
		}
		if p.Unpacked < minUnpacked || p.Unpacked > MaxUnpacked || p.Format == "" {
			t.Fatalf("accepted %+v", p)
		}
		if q, err := ParseHeader(data, size); err != nil || q.Offset != p.Offset || q.Length != p.Length {
			t.Fatalf("ParseHeader disagrees: %+v, %v", q, err)
		}
	})
}

// TestEnsureCrash unpacks two kernels in turn on an ext4 file system whose
// disk logs every write and flush (package crashdisk), and checks the disk
// as a power cut at every flush would have left it: an image that Fresh
// takes for the kernel's is always the kernel's ELF, whole; and once
// Ensure returned, the kernel's image is there.
func TestEnsureCrash(t *testing.T) {
	testenv.RequireRoot(t)
	testenv.LookPath(t, "mkfs.ext4")
	if _, err := os.Stat("/dev/fuse"); err != nil {
		testenv.Missing(t, "FUSE (/dev/fuse): %v", err)
	}
	ctx := context.Background()
	base := filepath.Join(t.TempDir(), "fresh.img")
	if err := crashdisk.Ext4(ctx, base, 64<<20); err != nil {
		t.Fatal(err)
	}
	disk, err := crashdisk.New(ctx, t.TempDir(), base)
	if err != nil {
		t.Fatal(err)
	}
	defer disk.Close()
	mnt := t.TempDir()
	// Only fsync makes data durable: no replace-by-rename heuristic, no
	// periodic commit within the run.
	if err := unix.Mount(disk.Device, mnt, "ext4", 0, "noauto_da_alloc,commit=3600"); err != nil {
		t.Fatal(err)
	}
	mounted := true
	defer func() {
		if mounted {
			unix.Unmount(mnt, 0)
		}
	}()
	kdir := filepath.Join(mnt, "6.1.0")
	os.Mkdir(kdir, 0o755)
	kernel := filepath.Join(kdir, "vmlinuz")
	elfs := map[string][]byte{}
	for _, name := range []string{"one", "two"} {
		elfs[name] = kt.ELF("kernel "+name+" ", 40000)
		// The kernel is installed durably (temporary file, fsync, rename,
		// directory fsync), as a package manager would.
		tmp := kernel + ".new"
		f, err := os.Create(tmp)
		if err != nil {
			t.Fatal(err)
		}
		f.Write(kt.BzImage(kt.Gzip(elfs[name])))
		if err := f.Sync(); err != nil {
			t.Fatal(err)
		}
		f.Close()
		if err := os.Rename(tmp, kernel); err != nil {
			t.Fatal(err)
		}
		if err := syncDir(kdir); err != nil {
			t.Fatal(err)
		}
		if err := disk.Mark("install " + name); err != nil {
			t.Fatal(err)
		}
		if _, err := Ensure(ctx, kernel); err != nil {
			t.Fatal(err)
		}
		if err := disk.Mark("ensure " + name); err != nil {
			t.Fatal(err)
		}
	}
	if err := unix.Unmount(mnt, 0); err != nil {
		t.Fatal(err)
	}
	mounted = false
	if err := disk.Close(); err != nil {
		t.Fatal(err)
	}
	t.Logf("log: %+v", disk.Stats())
	check := t.TempDir()
	bad := 0
	err = disk.Replay(ctx, func(p crashdisk.Point, image string) error {
		unmount, err := crashdisk.MountImage(ctx, image, check, "ext4", "")
		if err != nil {
			return fmt.Errorf("%v: %w", p, err)
		}
		defer unmount()
		k := filepath.Join(check, "6.1.0", "vmlinuz")
		u := Fresh(k)
		var want []byte
		if img, err := os.ReadFile(k); err == nil {
			want, _ = unpack(img)
		}
		got, _ := os.ReadFile(filepath.Join(check, "6.1.0", UnpackedName))
		// After Ensure of a kernel returned, and while that kernel is
		// installed, its image is fresh.
		if n := len(p.Marks); n > 0 && strings.HasPrefix(p.Marks[n-1], "ensure ") {
			name := strings.TrimPrefix(p.Marks[n-1], "ensure ")
			if bytes.Equal(want, elfs[name]) && u == "" {
				t.Errorf("power cut at %v: no fresh image of kernel %s", p, name)
				bad++
			}
		}
		if u != "" && !bytes.Equal(got, want) {
			t.Errorf("power cut at %v: Fresh takes a %d-byte image for the kernel's %d-byte ELF", p, len(got), len(want))
			bad++
		}
		if bad >= 5 {
			return errors.New("giving up after 5 failing crash states")
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
}

// waitClockPast waits until a file written now in path's directory gets a
// modification time after path's change time: the filesystem's coarse clock
// has ticked since path changed.
func waitClockPast(t *testing.T, path string) {
	t.Helper()
	var st syscall.Stat_t
	if err := syscall.Stat(path, &st); err != nil {
		t.Fatal(err)
	}
	probe := filepath.Join(filepath.Dir(path), ".clock-probe")
	defer os.Remove(probe)
	for {
		if err := os.WriteFile(probe, nil, 0o644); err != nil {
			t.Fatal(err)
		}
		fi, err := os.Stat(probe)
		if err != nil {
			t.Fatal(err)
		}
		if fi.ModTime().UnixNano() > st.Ctim.Nano() {
			return
		}
		time.Sleep(time.Millisecond)
	}
}
