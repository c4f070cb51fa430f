package volume

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"runtime"
	"testing"

	"golang.org/x/sys/unix"

	"github.com/qvm-project/qvm/internal/testenv"
	"github.com/qvm-project/qvm/volume/loopfs"
)

// openImport opens an import and closes it when the test ends.
func openImport(t *testing.T, path string, move bool, refuse ...string) (*Import, error) {
	t.Helper()
	im, err := OpenImport(path, move, refuse...)
	if err == nil {
		t.Cleanup(func() { im.Close() })
	}
	return im, err
}

// TestOpenImport: each kind of bad source gets an error naming the file,
// the problem and the fix; nothing is followed or waited for.
func TestOpenImport(t *testing.T) {
	dir := t.TempDir()
	good := filepath.Join(dir, "good.img")
	writeSparse(t, good, 4*MiB, []extent{{0, 4096}})
	if im, err := openImport(t, good, false); err != nil || im.Size != 4*MiB {
		t.Errorf("OpenImport(good) = %+v, %v", im, err)
	}
	link := filepath.Join(dir, "link.img")
	if err := os.Symlink(good, link); err != nil {
		t.Fatal(err)
	}
	fifo := filepath.Join(dir, "fifo.img")
	if err := unix.Mkfifo(fifo, 0o600); err != nil {
		t.Fatal(err)
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
	state := filepath.Join(dir, "state")
	vmImage := filepath.Join(state, "appvms", "work", "root.img")
	os.MkdirAll(filepath.Dir(vmImage), 0o700)
	writeSparse(t, vmImage, MiB, nil)
	cases := []struct {
		path  string
		parts []string
	}{
		{filepath.Join(dir, "missing.img"), []string{"does not exist", "check the path"}},
		{dir, []string{"is a directory", "not a regular file"}},
		{link, []string{"symbolic link", "realpath"}},
		{fifo, []string{"not a regular file"}},
		{empty, []string{"is empty", "512-byte sector"}},
		{odd, []string{"1000 bytes", "not a whole number of 512-byte sectors", "truncate -s 1024"}},
		{qcow, []string{"qcow2", "qemu-img convert -O raw"}},
		{"/dev/null", []string{"not a regular file"}},
		{"/proc/self/status", []string{"procfs"}},
		{vmImage, []string{"inside qvm's state directory", "qvm-clone"}},
	}
	for _, c := range cases {
		_, err := openImport(t, c.path, false, state)
		wantErrContains(t, err, append([]string{c.path}, c.parts...)...)
	}
}

// TestOpenImportBlockDevice: a block device is refused with a way out.
func TestOpenImportBlockDevice(t *testing.T) {
	fs := scratchFS(t, loopfs.Ext4, 64*MiB)
	_, err := openImport(t, fs.Device, false)
	wantErrContains(t, err, fs.Device, "is a block device", "dd if="+fs.Device)
}

// TestOpenImportUnreadable: without the capability that lets root read
// anything, a mode-0200 image is refused as unreadable.
func TestOpenImportUnreadable(t *testing.T) {
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
		im, err := OpenImport(p, false)
		if err == nil {
			im.Close()
		}
		errc <- err
	}()
	err := <-errc
	wantErrContains(t, err, p, "not readable", "read permission")
	if !errors.Is(err, os.ErrPermission) {
		t.Errorf("err %v does not wrap ErrPermission", err)
	}
}

// TestImportCopy copies from the open file and leaves the source alone.
func TestImportCopy(t *testing.T) {
	dir := t.TempDir()
	src, dst := filepath.Join(dir, "win10-root.img"), filepath.Join(dir, "root.img")
	writeSparse(t, src, testLayout.size, testLayout.extents)
	im, err := openImport(t, src, false)
	if err != nil {
		t.Fatal(err)
	}
	if res, err := im.Place(context.Background(), dst); err != nil || res.Method == Link {
		t.Fatalf("Place: %+v, %v", res, err)
	}
	assertSameImage(t, src, dst)
	if err := FinishMove(im.MovedFrom(), dst); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(src); err != nil {
		t.Errorf("a copy import lost its source: %v", err)
	}
}

// TestImportMoveLinks: within one filesystem the VM's image is a second
// name of the user's file, which keeps its name, mode and owner until
// FinishMove; then the name is gone and the image is root's, mode 0600.
func TestImportMoveLinks(t *testing.T) {
	fs := scratchFS(t, loopfs.Ext4, scratchSize)
	for _, d := range []string{"home", "vm"} {
		if err := os.Mkdir(fs.Path(d), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	src, dst := fs.Path("home", "win10-root.img"), fs.Path("vm", "root.img")
	writeSparse(t, src, testLayout.size, testLayout.extents)
	os.Chmod(src, 0o644)
	os.Chown(src, 1000, 1000)
	var before unix.Stat_t
	unix.Stat(src, &before)
	sum := fileSum(t, src)

	im, err := openImport(t, src, true)
	if err != nil {
		t.Fatal(err)
	}
	res, err := im.Place(context.Background(), dst)
	if err != nil || res.Method != Link {
		t.Fatalf("Place: %+v, %v; want a link", res, err)
	}
	var placed, user unix.Stat_t
	unix.Stat(dst, &placed)
	if err := unix.Stat(src, &user); err != nil || user.Ino != before.Ino || user.Mode != before.Mode || user.Uid != 1000 {
		t.Errorf("before FinishMove the user's file changed: %+v, %v", user, err)
	}
	if placed.Ino != before.Ino {
		t.Errorf("inode %d -> %d: data was copied, not linked", before.Ino, placed.Ino)
	}
	if err := FinishMove(im.MovedFrom(), dst); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Lstat(src); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("source still there after FinishMove")
	}
	unix.Stat(dst, &placed)
	if placed.Mode&0o777 != imageMode || placed.Uid != 0 || placed.Gid != 0 {
		t.Errorf("moved image mode %o owner %d:%d, want %o root", placed.Mode&0o777, placed.Uid, placed.Gid, imageMode)
	}
	if fileSum(t, dst) != sum {
		t.Errorf("content changed by the move")
	}
	// Again (a crash before the marker went): nothing more happens.
	if err := FinishMove(im.MovedFrom(), dst); err != nil {
		t.Errorf("FinishMove again: %v", err)
	}
}

// TestImportMoveCopiesWhenItMust: across filesystems, or for a file with
// other hard links, the image is copied; FinishMove drops only the name
// given, and never a file put there since.
func TestImportMoveCopiesWhenItMust(t *testing.T) {
	a := scratchFS(t, loopfs.Tmpfs, scratchSize)
	b := scratchFS(t, loopfs.Ext4, scratchSize)
	src, dst := a.Path("win10-root.img"), b.Path("root.img")
	writeSparse(t, src, testLayout.size, testLayout.extents)
	ref := a.Path("ref.img")
	if _, err := Copy(context.Background(), src, ref); err != nil {
		t.Fatal(err)
	}
	im, err := openImport(t, src, true)
	if err != nil {
		t.Fatal(err)
	}
	if res, err := im.Place(context.Background(), dst); err != nil || res.Method == Link || res.Method == Reflink {
		t.Fatalf("Place across filesystems: %+v, %v", res, err)
	}
	if _, err := os.Stat(src); err != nil {
		t.Errorf("source gone before FinishMove: %v", err)
	}
	if err := FinishMove(im.MovedFrom(), dst); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Lstat(src); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("source still there after FinishMove")
	}
	assertSameImage(t, ref, dst)

	// A second name: copied, the other name keeps its own data.
	dir := b.Path("home")
	os.Mkdir(dir, 0o755)
	one, two, dst2 := filepath.Join(dir, "one.img"), filepath.Join(dir, "two.img"), b.Path("root2.img")
	writeSparse(t, one, MiB, []extent{{0, 4096}})
	if err := os.Link(one, two); err != nil {
		t.Fatal(err)
	}
	im2, err := openImport(t, one, true)
	if err != nil {
		t.Fatal(err)
	}
	if res, err := im2.Place(context.Background(), dst2); err != nil || res.Method == Link {
		t.Fatalf("Place of a hard-linked file: %+v, %v", res, err)
	}
	// The user replaced the file meanwhile: it is not removed.
	os.Remove(one)
	writeSparse(t, one, MiB, nil)
	if err := FinishMove(im2.MovedFrom(), dst2); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(one); err != nil {
		t.Errorf("a file put in the source's place was removed: %v", err)
	}
	if _, err := os.Stat(two); err != nil {
		t.Errorf("the source's other name is gone: %v", err)
	}
}

// TestImportMoveRefusals: a read-only source directory (the user's name
// could not be dropped), an existing destination, a cancelled context:
// nothing is made, the source is as it was.
func TestImportMoveRefusals(t *testing.T) {
	ro := scratchFS(t, loopfs.Tmpfs, 64*MiB)
	src := ro.Path("win10-root.img")
	writeSparse(t, src, 8*MiB, []extent{{0, MiB}})
	if err := unix.Mount("", ro.Dir, "", unix.MS_REMOUNT|unix.MS_RDONLY, ""); err != nil {
		t.Fatal(err)
	}
	_, err := openImport(t, src, true)
	wantErrContains(t, err, "not writable", "--root-copy-from")

	dir := t.TempDir()
	src2, dst2 := filepath.Join(dir, "a.img"), filepath.Join(dir, "root.img")
	writeSparse(t, src2, MiB, []extent{{0, 4096}})
	if err := os.WriteFile(dst2, []byte("keep"), 0o600); err != nil {
		t.Fatal(err)
	}
	im, err := openImport(t, src2, true)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := im.Place(context.Background(), dst2); !errors.Is(err, os.ErrExist) {
		t.Errorf("move onto an existing file: %v", err)
	}
	if b, _ := os.ReadFile(dst2); string(b) != "keep" {
		t.Errorf("existing destination overwritten")
	}
	os.Remove(dst2)
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if _, err := im.Place(ctx, dst2); !errors.Is(err, context.Canceled) {
		t.Errorf("move with a cancelled context: %v", err)
	}
	if _, err := os.Stat(dst2); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("cancelled move created its destination")
	}
	if st, err := os.Stat(src2); err != nil || st.Mode().Perm() != 0o644 {
		t.Errorf("refused move changed the source: %v, %v", st, err)
	}
}
