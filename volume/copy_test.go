package volume

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"

	"github.com/qvm-project/qvm/volume/loopfs"
	"golang.org/x/sys/unix"
)

const scratchSize = 512 * MiB

// TestCopyReflink: on XFS with reflink and on btrfs, Copy clones: the copy
// shares the source's blocks (filefrag shows shared extents, the free space
// does not drop by the data size) and is identical, holes included.
func TestCopyReflink(t *testing.T) {
	for _, ft := range []loopfs.Type{loopfs.XFS, loopfs.Btrfs} {
		t.Run(string(ft), func(t *testing.T) {
			fs := scratchFS(t, ft, scratchSize)
			src, dst := fs.Path("src.img"), fs.Path("dst.img")
			writeSparse(t, src, testLayout.size, testLayout.extents)
			data := dataSize(testLayout.extents)

			before := freeBytes(t, fs.Dir)
			res, err := Copy(context.Background(), src, dst)
			if err != nil {
				t.Fatal(err)
			}
			after := freeBytes(t, fs.Dir)
			if res.Method != Reflink {
				t.Errorf("method %v, want reflink", res.Method)
			}
			if res.Size != testLayout.size || res.Copied != 0 {
				t.Errorf("result %+v, want size %d and nothing copied", res, testLayout.size)
			}
			assertSameImage(t, src, dst)
			if !sharedExtents(t, dst) {
				t.Errorf("filefrag -v shows no shared extents in the copy")
			}
			if used := before - after; used > data/4 {
				t.Errorf("the clone used %d bytes of free space for %d bytes of data: blocks not shared", used, data)
			}
		})
	}
}

// TestCopySparse: where reflink is impossible (ext4, XFS without reflink,
// tmpfs) Copy copies the data extents with copy_file_range and the holes
// stay holes; the copy takes its own space.
func TestCopySparse(t *testing.T) {
	for _, ft := range []loopfs.Type{loopfs.Ext4, loopfs.XFSNoReflink, loopfs.Tmpfs} {
		t.Run(string(ft), func(t *testing.T) {
			fs := scratchFS(t, ft, scratchSize)
			src, dst := fs.Path("src.img"), fs.Path("dst.img")
			writeSparse(t, src, testLayout.size, testLayout.extents)
			data := dataSize(testLayout.extents)

			before := freeBytes(t, fs.Dir)
			res, err := Copy(context.Background(), src, dst)
			if err != nil {
				t.Fatal(err)
			}
			after := freeBytes(t, fs.Dir)
			if res.Method != CopyFileRange {
				t.Errorf("method %v, want copy_file_range", res.Method)
			}
			if res.Copied != data {
				t.Errorf("copied %d bytes, want the %d data bytes", res.Copied, data)
			}
			assertSameImage(t, src, dst)
			if ft != loopfs.Tmpfs && sharedExtents(t, dst) {
				t.Errorf("filefrag -v shows shared extents on %s, which has no reflink", ft)
			}
			if used := before - after; used < data {
				t.Errorf("copy used %d bytes of free space, less than its %d data bytes", used, data)
			}
		})
	}
}

// TestCopyReadWrite exercises the user-space fallback (what runs when
// copy_file_range is refused), also on a reflink filesystem.
func TestCopyReadWrite(t *testing.T) {
	for _, ft := range []loopfs.Type{loopfs.Tmpfs, loopfs.XFS} {
		t.Run(string(ft), func(t *testing.T) {
			fs := scratchFS(t, ft, scratchSize)
			src, dst := fs.Path("src.img"), fs.Path("dst.img")
			writeSparse(t, src, testLayout.size, testLayout.extents)
			res, err := Copy(context.Background(), src, dst, withReadWrite())
			if err != nil {
				t.Fatal(err)
			}
			if res.Method != ReadWrite || res.Copied != dataSize(testLayout.extents) {
				t.Errorf("result %+v, want read/write of %d bytes", res, dataSize(testLayout.extents))
			}
			assertSameImage(t, src, dst)
			if ft == loopfs.XFS && sharedExtents(t, dst) {
				t.Errorf("read/write copy shares extents")
			}
		})
	}
}

// TestCopyAcrossFilesystems copies tmpfs -> ext4 (reflink impossible).
func TestCopyAcrossFilesystems(t *testing.T) {
	a := scratchFS(t, loopfs.Tmpfs, scratchSize)
	b := scratchFS(t, loopfs.Ext4, scratchSize)
	src, dst := a.Path("src.img"), b.Path("dst.img")
	writeSparse(t, src, testLayout.size, testLayout.extents)
	res, err := Copy(context.Background(), src, dst)
	if err != nil {
		t.Fatal(err)
	}
	if res.Method == Reflink {
		t.Errorf("method reflink across filesystems")
	}
	assertSameImage(t, src, dst)
}

// TestCopyEmptyAndAllHoles: an image with no data copies as all holes.
func TestCopyEmptyAndAllHoles(t *testing.T) {
	dir := scratchFS(t, loopfs.Ext4, scratchSize).Dir
	src := filepath.Join(dir, "holes.img")
	if err := Create(src, DefaultRootSize); err != nil {
		t.Fatal(err)
	}
	var calls []int64
	res, err := Copy(context.Background(), src, filepath.Join(dir, "copy.img"),
		WithProgressFunc(func(done, total int64) { calls = append(calls, done, total) }))
	if err != nil {
		t.Fatal(err)
	}
	if res.Copied != 0 || res.Size != DefaultRootSize {
		t.Errorf("result %+v", res)
	}
	if fmt.Sprint(calls) != "[0 0]" {
		t.Errorf("progress calls %v, want one (0, 0)", calls)
	}
	u, err := Stat(filepath.Join(dir, "copy.img"))
	if err != nil {
		t.Fatal(err)
	}
	if u.Size != DefaultRootSize || u.Allocated != 0 {
		t.Errorf("copy of an all-hole image: %+v, want 10 GiB with nothing allocated", u)
	}
}

// TestCopyCancel: cancelling mid-copy returns context.Canceled and leaves
// nothing in the destination directory, with O_TMPFILE and with a named
// temporary file.
func TestCopyCancel(t *testing.T) {
	for _, named := range []bool{false, true} {
		t.Run(fmt.Sprintf("named=%v", named), func(t *testing.T) {
			a := scratchFS(t, loopfs.Tmpfs, scratchSize)
			b := scratchFS(t, loopfs.Ext4, scratchSize)
			src, dst := a.Path("src.img"), b.Path("dst.img")
			writeSparse(t, src, testLayout.size, testLayout.extents)
			free := freeBytes(t, b.Dir)

			ctx, cancel := context.WithCancel(context.Background())
			defer cancel()
			var seen int64
			opts := []Option{WithProgressFunc(func(done, total int64) {
				seen = done
				if done > 0 && done < total {
					cancel()
				}
			})}
			if named {
				opts = append(opts, withNamedTemp())
			}
			_, err := Copy(ctx, src, dst, opts...)
			if !errors.Is(err, context.Canceled) {
				t.Fatalf("err %v, want context.Canceled", err)
			}
			if seen >= dataSize(testLayout.extents) {
				t.Fatalf("the copy finished (%d bytes) before it saw the cancellation", seen)
			}
			if names := dirNames(t, b.Dir); len(names) != 0 {
				t.Errorf("left behind in the destination directory: %v", names)
			}
			if after := freeBytes(t, b.Dir); after < free-MiB {
				t.Errorf("free space %d after the cancelled copy, %d before: partial data kept", after, free)
			}
		})
	}
}

// TestCopyNoSpace: a copy that runs out of space fails with ENOSPC and
// leaves neither a file nor used space behind.
func TestCopyNoSpace(t *testing.T) {
	for _, named := range []bool{false, true} {
		t.Run(fmt.Sprintf("named=%v", named), func(t *testing.T) {
			a := scratchFS(t, loopfs.Tmpfs, scratchSize)
			b := scratchFS(t, loopfs.Tmpfs, 16*MiB)
			src, dst := a.Path("src.img"), b.Path("dst.img")
			writeSparse(t, src, testLayout.size, testLayout.extents)
			opts := []Option{}
			if named {
				opts = append(opts, withNamedTemp())
			}
			_, err := Copy(context.Background(), src, dst, opts...)
			if !errors.Is(err, unix.ENOSPC) {
				t.Fatalf("err %v, want ENOSPC", err)
			}
			if names := dirNames(t, b.Dir); len(names) != 0 {
				t.Errorf("left behind: %v", names)
			}
			if free := freeBytes(t, b.Dir); free < 15*MiB {
				t.Errorf("only %d bytes free after the failed copy: partial data kept", free)
			}
		})
	}
}

// TestCopyRefusals: an existing destination is never overwritten; a source
// that is missing or not a regular file is refused; nothing is created.
func TestCopyRefusals(t *testing.T) {
	dir := t.TempDir()
	src, dst := filepath.Join(dir, "src.img"), filepath.Join(dir, "dst.img")
	if err := os.WriteFile(src, bytes.Repeat([]byte{1}, 4096), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(dst, []byte("keep me"), 0o600); err != nil {
		t.Fatal(err)
	}
	_, err := Copy(context.Background(), src, dst)
	if !errors.Is(err, os.ErrExist) {
		t.Errorf("copy onto an existing file: err %v, want ErrExist", err)
	}
	wantErrContains(t, err, dst, "already exists")
	if b, _ := os.ReadFile(dst); string(b) != "keep me" {
		t.Errorf("existing destination changed to %q", b)
	}

	_, err = Copy(context.Background(), filepath.Join(dir, "missing.img"), filepath.Join(dir, "new.img"))
	if !errors.Is(err, os.ErrNotExist) {
		t.Errorf("missing source: err %v, want ErrNotExist", err)
	}
	_, err = Copy(context.Background(), dir, filepath.Join(dir, "new.img"))
	wantErrContains(t, err, "not a regular file")
	if _, err := os.Stat(filepath.Join(dir, "new.img")); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("a refused copy created its destination")
	}
	if names := dirNames(t, dir); len(names) != 2 {
		t.Errorf("directory holds %v, want only src.img and dst.img", names)
	}
}

// TestProgressFunc: the callback sees the done count grow to the total of
// data bytes, for the sparse copy and for a reflink.
func TestProgressFunc(t *testing.T) {
	for _, ft := range []loopfs.Type{loopfs.Ext4, loopfs.XFS} {
		t.Run(string(ft), func(t *testing.T) {
			fs := scratchFS(t, ft, scratchSize)
			src := fs.Path("src.img")
			writeSparse(t, src, testLayout.size, testLayout.extents)
			want := dataSize(testLayout.extents)
			var last, calls int64
			_, err := Copy(context.Background(), src, fs.Path("dst.img"), WithProgressFunc(func(done, total int64) {
				calls++
				if total != want {
					t.Errorf("total %d, want %d", total, want)
				}
				if done < last || done > total {
					t.Errorf("done %d after %d (total %d)", done, last, total)
				}
				last = done
			}))
			if err != nil {
				t.Fatal(err)
			}
			if last != want {
				t.Errorf("last progress %d, want %d", last, want)
			}
			if ft == loopfs.Ext4 && calls < 3 {
				t.Errorf("%d progress calls for %d extents", calls, len(testLayout.extents))
			}
		})
	}
}

// openPTY returns the two ends of a new pseudo-terminal.
func openPTY(t *testing.T) (master, slave *os.File) {
	t.Helper()
	m, err := os.OpenFile("/dev/ptmx", os.O_RDWR|unix.O_NOCTTY, 0)
	if err != nil {
		t.Skipf("no pseudo-terminals: %v", err)
	}
	if err := unix.IoctlSetPointerInt(int(m.Fd()), unix.TIOCSPTLCK, 0); err != nil {
		m.Close()
		t.Fatal(err)
	}
	n, err := unix.IoctlGetInt(int(m.Fd()), unix.TIOCGPTN)
	if err != nil {
		m.Close()
		t.Fatal(err)
	}
	s, err := os.OpenFile(fmt.Sprintf("/dev/pts/%d", n), os.O_RDWR|unix.O_NOCTTY, 0)
	if err != nil {
		m.Close()
		t.Fatal(err)
	}
	t.Cleanup(func() { m.Close(); s.Close() })
	return m, s
}

// TestProgressBar: on a terminal the copy draws a bar that reaches 100%;
// on a pipe or a plain file it prints nothing.
func TestProgressBar(t *testing.T) {
	dir := t.TempDir()
	src := filepath.Join(dir, "src.img")
	writeSparse(t, src, testLayout.size, testLayout.extents)

	master, slave := openPTY(t)
	var out bytes.Buffer
	var wg sync.WaitGroup
	wg.Add(1)
	go func() { defer wg.Done(); io.Copy(&out, master) }()
	if _, err := Copy(context.Background(), src, filepath.Join(dir, "tty.img"), WithProgress(slave), WithLabel("my-vm:root")); err != nil {
		t.Fatal(err)
	}
	slave.Close() // the reader then gets EIO and stops
	wg.Wait()
	if s := out.String(); !strings.Contains(s, "my-vm:root") || !strings.Contains(s, "100%") {
		t.Errorf("terminal output %q lacks the label and 100%%", s)
	}

	var buf bytes.Buffer
	if _, err := Copy(context.Background(), src, filepath.Join(dir, "buf.img"), WithProgress(&buf)); err != nil {
		t.Fatal(err)
	}
	plain, err := os.Create(filepath.Join(dir, "log"))
	if err != nil {
		t.Fatal(err)
	}
	defer plain.Close()
	if _, err := Copy(context.Background(), src, filepath.Join(dir, "file.img"), WithProgress(plain)); err != nil {
		t.Fatal(err)
	}
	if st, _ := plain.Stat(); buf.Len() != 0 || st.Size() != 0 {
		t.Errorf("progress written to a non-terminal: %q / %d bytes", buf.String(), st.Size())
	}
}

// TestCleanPartials removes leftovers of an interrupted named-temp copy and
// nothing else.
func TestCleanPartials(t *testing.T) {
	dir := t.TempDir()
	for _, n := range []string{"root.img", ".root.img" + partialMarker + "123", "private.img"} {
		if err := os.WriteFile(filepath.Join(dir, n), nil, 0o600); err != nil {
			t.Fatal(err)
		}
	}
	if err := CleanPartials(dir); err != nil {
		t.Fatal(err)
	}
	if got := fmt.Sprint(dirNames(t, dir)); got != "[private.img root.img]" {
		t.Errorf("after CleanPartials: %s", got)
	}
}
