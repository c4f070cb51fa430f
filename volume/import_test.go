package volume

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"runtime"
	"testing"

	"github.com/qvm-project/qvm/internal/testenv"
	"github.com/qvm-project/qvm/volume/loopfs"
	"golang.org/x/sys/unix"
)

// TestValidateImage: each kind of bad source gets an error naming the file,
// the problem and the fix.
func TestValidateImage(t *testing.T) {
	dir := t.TempDir()
	good := filepath.Join(dir, "good.img")
	writeSparse(t, good, 4*MiB, []extent{{0, 4096}})
	if size, err := ValidateImage(good); err != nil || size != 4*MiB {
		t.Errorf("ValidateImage(good) = %d, %v", size, err)
	}
	link := filepath.Join(dir, "link.img")
	if err := os.Symlink(good, link); err != nil {
		t.Fatal(err)
	}
	if _, err := ValidateImage(link); err != nil {
		t.Errorf("symlink to a good image: %v", err)
	}

	write := func(name string, data []byte) string {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, data, 0o600); err != nil {
			t.Fatal(err)
		}
		return p
	}
	empty := write("empty.img", nil)
	odd := write("odd.img", make([]byte, 1000))
	qcow := write("disk.qcow2", append([]byte("QFI\xfb\x00\x00\x00\x03"), make([]byte, 504)...))
	cases := []struct {
		path  string
		parts []string
	}{
		{filepath.Join(dir, "missing.img"), []string{"does not exist", "check the path"}},
		{dir, []string{"is a directory"}},
		{empty, []string{"is empty", "512-byte sector"}},
		{odd, []string{"1000 bytes", "not a whole number of 512-byte sectors", "truncate -s 1024"}},
		{qcow, []string{"qcow2", "qemu-img convert -O raw"}},
		{"/dev/null", []string{"not a regular file"}},
	}
	for _, c := range cases {
		_, err := ValidateImage(c.path)
		wantErrContains(t, err, append([]string{c.path}, c.parts...)...)
	}
}

// TestValidateImageBlockDevice: a block device is refused with a way out.
func TestValidateImageBlockDevice(t *testing.T) {
	fs := scratchFS(t, loopfs.Ext4, 64*MiB)
	_, err := ValidateImage(fs.Device)
	wantErrContains(t, err, fs.Device, "is a block device", "dd if="+fs.Device)
}

// TestValidateImageUnreadable: without the capability that lets root read
// anything, a mode-0200 image is refused as unreadable.
func TestValidateImageUnreadable(t *testing.T) {
	testenv.RequireRoot(t)
	p := filepath.Join(t.TempDir(), "secret.img")
	if err := os.WriteFile(p, make([]byte, 512), 0o200); err != nil {
		t.Fatal(err)
	}
	errc := make(chan error, 1)
	go func() {
		// Capabilities are per thread: drop DAC override on this one
		// only, and never unlock it, so the thread dies with the goroutine.
		runtime.LockOSThread()
		hdr := unix.CapUserHeader{Version: unix.LINUX_CAPABILITY_VERSION_3}
		var data [2]unix.CapUserData
		if err := unix.Capget(&hdr, &data[0]); err != nil {
			errc <- err
			return
		}
		data[0].Effective &^= 1<<unix.CAP_DAC_OVERRIDE | 1<<unix.CAP_DAC_READ_SEARCH
		if err := unix.Capset(&hdr, &data[0]); err != nil {
			errc <- err
			return
		}
		_, err := ValidateImage(p)
		errc <- err
	}()
	err := <-errc
	wantErrContains(t, err, p, "not readable", "read permission")
	if !errors.Is(err, os.ErrPermission) {
		t.Errorf("err %v does not wrap ErrPermission", err)
	}
}

// TestCopyFrom validates first and copies without touching the source.
func TestCopyFrom(t *testing.T) {
	dir := t.TempDir()
	src, dst := filepath.Join(dir, "win10-root.img"), filepath.Join(dir, "root.img")
	writeSparse(t, src, testLayout.size, testLayout.extents)
	if _, err := CopyFrom(context.Background(), src, dst); err != nil {
		t.Fatal(err)
	}
	assertSameImage(t, src, dst)

	bad := filepath.Join(dir, "bad.img")
	if err := os.WriteFile(bad, make([]byte, 100), 0o600); err != nil {
		t.Fatal(err)
	}
	_, err := CopyFrom(context.Background(), bad, filepath.Join(dir, "root2.img"))
	wantErrContains(t, err, "512-byte sectors")
	if _, err := os.Stat(filepath.Join(dir, "root2.img")); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("refused import created its destination")
	}
}

// TestMoveFromSameFilesystem renames: same inode, source gone, mode 0600.
func TestMoveFromSameFilesystem(t *testing.T) {
	fs := scratchFS(t, loopfs.Ext4, scratchSize)
	if err := os.Mkdir(fs.Path("home"), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.Mkdir(fs.Path("vm"), 0o700); err != nil {
		t.Fatal(err)
	}
	src, dst := fs.Path("home", "win10-root.img"), fs.Path("vm", "root.img")
	writeSparse(t, src, testLayout.size, testLayout.extents)
	var before unix.Stat_t
	unix.Stat(src, &before)
	sum := fileSum(t, src)

	res, err := MoveFrom(context.Background(), src, dst)
	if err != nil {
		t.Fatal(err)
	}
	if res.Method != Rename {
		t.Errorf("method %v, want rename", res.Method)
	}
	var after unix.Stat_t
	if err := unix.Stat(dst, &after); err != nil {
		t.Fatal(err)
	}
	if after.Ino != before.Ino {
		t.Errorf("inode %d -> %d: data was copied, not renamed", before.Ino, after.Ino)
	}
	if after.Mode&0o777 != imageMode {
		t.Errorf("moved image mode %o, want %o", after.Mode&0o777, imageMode)
	}
	if _, err := os.Lstat(src); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("source still there after the move")
	}
	if fileSum(t, dst) != sum {
		t.Errorf("content changed by the move")
	}
}

// TestMoveFromAcrossFilesystems copies tmpfs -> ext4 sparsely, then drops
// the source.
func TestMoveFromAcrossFilesystems(t *testing.T) {
	a := scratchFS(t, loopfs.Tmpfs, scratchSize)
	b := scratchFS(t, loopfs.Ext4, scratchSize)
	src, dst := a.Path("win10-root.img"), b.Path("root.img")
	writeSparse(t, src, testLayout.size, testLayout.extents)
	// A reference copy to compare with, since the source goes away.
	ref := a.Path("ref.img")
	if _, err := Copy(context.Background(), src, ref); err != nil {
		t.Fatal(err)
	}
	res, err := MoveFrom(context.Background(), src, dst)
	if err != nil {
		t.Fatal(err)
	}
	if res.Method == Rename || res.Method == Reflink {
		t.Errorf("method %v across filesystems", res.Method)
	}
	if _, err := os.Lstat(src); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("source still there after the move")
	}
	assertSameImage(t, ref, dst)

	// A move that fails half-way (the destination fills up) keeps the
	// source as it was and creates nothing.
	small := scratchFS(t, loopfs.Tmpfs, 16*MiB)
	if err := os.Chmod(ref, 0o644); err != nil {
		t.Fatal(err)
	}
	_, err = MoveFrom(context.Background(), ref, small.Path("root.img"))
	if !errors.Is(err, unix.ENOSPC) {
		t.Fatalf("move into a full filesystem: %v, want ENOSPC", err)
	}
	if names := dirNames(t, small.Dir); len(names) != 0 {
		t.Errorf("failed move left %v", names)
	}
	if st, err := os.Stat(ref); err != nil || st.Mode().Perm() != 0o644 {
		t.Errorf("failed move changed its source: %v, %v", st, err)
	}
	assertSameImage(t, ref, dst)
}

// TestMoveFromSymlink reads through the link, removes the link and keeps
// its target (Qubes unlinks the path it was given).
func TestMoveFromSymlink(t *testing.T) {
	dir := t.TempDir()
	target, link, dst := filepath.Join(dir, "real.img"), filepath.Join(dir, "link.img"), filepath.Join(dir, "root.img")
	writeSparse(t, target, 8*MiB, []extent{{MiB, MiB}})
	if err := os.Symlink(target, link); err != nil {
		t.Fatal(err)
	}
	if _, err := MoveFrom(context.Background(), link, dst); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Lstat(link); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("symlink still there")
	}
	assertSameImage(t, target, dst)
}

// TestMoveFromRefusals: a read-only source directory (the source could not
// be removed), an existing destination, a bad image, a cancelled context:
// nothing moves, nothing is created.
func TestMoveFromRefusals(t *testing.T) {
	ro := scratchFS(t, loopfs.Tmpfs, 64*MiB)
	dst := filepath.Join(t.TempDir(), "root.img")
	src := ro.Path("win10-root.img")
	writeSparse(t, src, 8*MiB, []extent{{0, MiB}})
	if err := unix.Mount("", ro.Dir, "", unix.MS_REMOUNT|unix.MS_RDONLY, ""); err != nil {
		t.Fatal(err)
	}
	_, err := MoveFrom(context.Background(), src, dst)
	wantErrContains(t, err, "not writable", "--root-copy-from")
	if _, err := os.Stat(dst); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("refused move created its destination")
	}
	if _, err := os.Stat(src); err != nil {
		t.Errorf("refused move lost its source: %v", err)
	}

	dir := t.TempDir()
	src2, dst2 := filepath.Join(dir, "a.img"), filepath.Join(dir, "root.img")
	writeSparse(t, src2, MiB, []extent{{0, 4096}})
	if err := os.WriteFile(dst2, []byte("keep"), 0o600); err != nil {
		t.Fatal(err)
	}
	_, err = MoveFrom(context.Background(), src2, dst2)
	if !errors.Is(err, os.ErrExist) {
		t.Errorf("move onto an existing file: %v", err)
	}
	if b, _ := os.ReadFile(dst2); string(b) != "keep" {
		t.Errorf("existing destination overwritten")
	}
	os.Remove(dst2)
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if _, err := MoveFrom(ctx, src2, dst2); !errors.Is(err, context.Canceled) {
		t.Errorf("move with a cancelled context: %v", err)
	}
	if _, err := os.Stat(src2); err != nil {
		t.Errorf("cancelled move lost its source: %v", err)
	}
	if _, err := os.Stat(dst2); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("cancelled move created its destination")
	}
	if st, _ := os.Stat(src2); st.Mode().Perm() != 0o644 {
		t.Errorf("refused move changed the source's mode to %v", st.Mode().Perm())
	}
}
