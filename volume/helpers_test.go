package volume

import (
	"bytes"
	"context"
	"crypto/sha256"
	"io"
	"math/rand/v2"
	"os"
	"os/exec"
	"slices"
	"strings"
	"testing"

	"github.com/qvm-project/qvm/internal/testenv"
	"github.com/qvm-project/qvm/volume/loopfs"
	"golang.org/x/sys/unix"
)

// scratchFS mounts a fresh filesystem of type ft for the test and removes
// it (unmount, detach the loop device) when the test ends, failed or not.
func scratchFS(t *testing.T, ft loopfs.Type, size int64) *loopfs.FS {
	t.Helper()
	testenv.RequireRoot(t)
	for _, c := range ft.Commands() {
		testenv.LookPath(t, c)
	}
	fs, err := loopfs.Make(context.Background(), t.TempDir(), ft, size)
	if err != nil {
		t.Fatalf("make %s: %v", ft, err)
	}
	t.Cleanup(func() {
		if err := fs.Close(); err != nil {
			t.Errorf("remove %s scratch filesystem: %v", ft, err)
		}
	})
	return fs
}

// extent is a byte range [Off, Off+Len).
type extent struct{ Off, Len int64 }

// testLayout is a sparse image of 96 MiB apparent size holding about 42 MiB
// of data in five extents: one at the start, one much larger than copyChunk
// (so a copy takes several steps), a small one off a page boundary, and one
// that ends the file.
var testLayout = struct {
	size    int64
	extents []extent
}{
	size: 96 * MiB,
	extents: []extent{
		{0, 1 * MiB},
		{5 * MiB, 3 * MiB},
		{20 * MiB, 36 * MiB},
		{60*MiB + 4096, 8192},
		{96*MiB - 2*MiB, 2 * MiB},
	},
}

func dataSize(ex []extent) int64 {
	var n int64
	for _, e := range ex {
		n += e.Len
	}
	return n
}

// writeSparse makes a file of size bytes with random data in the extents
// and holes elsewhere, fsynced.
func writeSparse(t *testing.T, path string, size int64, ex []extent) {
	t.Helper()
	f, err := os.OpenFile(path, os.O_RDWR|os.O_CREATE|os.O_EXCL, 0o644)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if err := f.Truncate(size); err != nil {
		t.Fatal(err)
	}
	rng := rand.NewChaCha8([32]byte{byte(size), byte(len(ex))})
	for _, e := range ex {
		buf := make([]byte, e.Len)
		rng.Read(buf)
		if _, err := f.WriteAt(buf, e.Off); err != nil {
			t.Fatal(err)
		}
	}
	if err := f.Sync(); err != nil {
		t.Fatal(err)
	}
}

// dataMap lists the data extents of a file as SEEK_DATA/SEEK_HOLE see them.
func dataMap(t *testing.T, path string) []extent {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	st, err := f.Stat()
	if err != nil {
		t.Fatal(err)
	}
	var m []extent
	if err := dataExtents(int(f.Fd()), st.Size(), func(s, e int64) error {
		m = append(m, extent{s, e - s})
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	return m
}

// fileSum hashes a file's whole content (holes read as zeros).
func fileSum(t *testing.T, path string) [32]byte {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	h := sha256.New()
	if _, err := io.Copy(h, f); err != nil {
		t.Fatal(err)
	}
	var s [32]byte
	copy(s[:], h.Sum(nil))
	return s
}

// assertSameImage checks dst is byte-identical to src with the same size,
// the same data map (holes survived) and the same allocation.
func assertSameImage(t *testing.T, src, dst string) {
	t.Helper()
	su, err := Stat(src)
	if err != nil {
		t.Fatal(err)
	}
	du, err := Stat(dst)
	if err != nil {
		t.Fatal(err)
	}
	if su.Size != du.Size {
		t.Errorf("size: source %d, copy %d", su.Size, du.Size)
	}
	if fileSum(t, src) != fileSum(t, dst) {
		t.Errorf("content of %s differs from %s", dst, src)
	}
	sm, dm := dataMap(t, src), dataMap(t, dst)
	if !slices.Equal(sm, dm) {
		t.Errorf("data map: source %v, copy %v", sm, dm)
	}
	// Allocation may differ by filesystem metadata (an ext4 extent block),
	// never by a filled hole.
	if data := dataSize(dm); du.Allocated > data+64*KiB {
		t.Errorf("copy allocates %d bytes for %d data bytes (source %d): holes were filled", du.Allocated, data, su.Allocated)
	}
}

// freeBytes is the free space of the filesystem holding path, after a sync.
func freeBytes(t *testing.T, path string) int64 {
	t.Helper()
	var s unix.Statfs_t
	if err := unix.Statfs(path, &s); err != nil {
		t.Fatal(err)
	}
	fd, err := unix.Open(path, unix.O_RDONLY, 0)
	if err == nil {
		unix.Syncfs(fd)
		unix.Close(fd)
	}
	if err := unix.Statfs(path, &s); err != nil {
		t.Fatal(err)
	}
	return int64(s.Bfree) * int64(s.Bsize)
}

// sharedExtents runs e2fsprogs' filefrag -v and reports whether any extent
// of the file carries the "shared" flag (blocks reflinked with another file).
func sharedExtents(t *testing.T, path string) bool {
	t.Helper()
	ff := testenv.LookPath(t, "filefrag")
	out, err := exec.Command(ff, "-v", path).CombinedOutput()
	if err != nil {
		t.Fatalf("filefrag -v %s: %v\n%s", path, err, out)
	}
	return bytes.Contains(out, []byte("shared"))
}

// dirNames lists a directory's entries (to find leftovers).
func dirNames(t *testing.T, dir string) []string {
	t.Helper()
	ents, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, e := range ents {
		if e.Name() != "lost+found" {
			names = append(names, e.Name())
		}
	}
	return names
}

func wantErrContains(t *testing.T, err error, parts ...string) {
	t.Helper()
	if err == nil {
		t.Fatalf("no error; want one containing %q", parts)
	}
	for _, p := range parts {
		if !strings.Contains(err.Error(), p) {
			t.Errorf("error %q does not contain %q", err, p)
		}
	}
}
