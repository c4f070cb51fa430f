// Package crashdisk gives tests a block device that logs every write and
// flush reaching it, and rebuilds the disk as a power cut at any flush
// would have left it: the method of Linux's dm-log-writes target and
// xfstests' replay-log, for kernels without device mapper (this project's
// build machines run one).
//
// The device is a loop device over a file that this process serves
// through FUSE, without page cache. The loop driver turns each block
// write into a write of the file and each flush into an fsync of it (it
// declares a volatile write cache without FUA, so the block layer turns a
// FUA write into a write and a flush); the server answers one request at
// a time and logs each in the order it completed. A file system may only
// count on what it wrote and saw complete before a flush, so the disk as
// the log stands at a flush (all writes logged before it, none after) is
// one a power cut just after that flush could leave. Replay builds that
// disk at every flush, for the test to mount and check.
//
// Mark puts a named point in the log, in order with the writes: a test
// marks each operation that returned, and knows at each flush which
// operations had returned before it, so which must have become durable.
package crashdisk

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"time"

	"golang.org/x/sys/unix"

	"github.com/qvm-project/qvm/loopdev"
)

// Disk is a logged block device.
type Disk struct {
	// Device is the loop device node (/dev/loopN) to make a file system
	// on and mount.
	Device string

	dir    string
	base   string // the image the log starts from
	mnt    string // the FUSE mount serving the live image
	srv    *exec.Cmd
	marks  io.WriteCloser // to the server: names to mark
	acks   *bufio.Reader  // from the server: one line per mark
	stderr bytes.Buffer
	loop   *loopdev.Device
	log    *writeLog // read from the server's files once it has exited
	closed bool
}

// New makes a logged disk that starts as a copy of the image file base
// (which it does not change), keeping its files in dir (an empty
// directory, e.g. a test's TempDir). Close it when done.
//
// The FUSE server runs in a child process, this program run again with
// an environment variable that makes this package's init serve instead
// (a server inside the process whose file system it serves deadlocks
// when the garbage collector stops the world while another goroutine
// waits on that file system in the kernel).
func New(ctx context.Context, dir, base string) (d *Disk, err error) {
	d = &Disk{dir: dir, base: filepath.Join(dir, baseName), mnt: filepath.Join(dir, mountName)}
	if err := copySparse(d.base, base); err != nil {
		return nil, fmt.Errorf("crash disk: %w", err)
	}
	if err := copySparse(filepath.Join(dir, liveName), base); err != nil {
		return nil, fmt.Errorf("crash disk: %w", err)
	}
	if err := os.Mkdir(d.mnt, 0o700); err != nil {
		return nil, fmt.Errorf("crash disk: %w", err)
	}
	self, err := os.Executable()
	if err != nil {
		return nil, fmt.Errorf("crash disk: %w", err)
	}
	d.srv = exec.Command(self)
	d.srv.Env = append(os.Environ(), serveEnv+"="+dir)
	d.srv.Stderr = &d.stderr
	d.srv.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	if d.marks, err = d.srv.StdinPipe(); err != nil {
		return nil, fmt.Errorf("crash disk: %w", err)
	}
	out, err := d.srv.StdoutPipe()
	if err != nil {
		return nil, fmt.Errorf("crash disk: %w", err)
	}
	d.acks = bufio.NewReader(out)
	if err := d.srv.Start(); err != nil {
		return nil, fmt.Errorf("crash disk: start the FUSE server: %w", err)
	}
	defer func() {
		if err != nil {
			d.Close()
		}
	}()
	if line, err := d.acks.ReadString('\n'); err != nil || line != "ready\n" {
		d.marks.Close()
		d.srv.Wait()
		return nil, fmt.Errorf("crash disk: the FUSE server did not start: %q %v: %s", line, err, d.stderr.String())
	}
	d.loop, err = loopdev.Attach(ctx, filepath.Join(d.mnt, fileName), false)
	if err != nil {
		return nil, fmt.Errorf("crash disk: %w", err)
	}
	d.Device = d.loop.Path
	return d, nil
}

// Mark logs a named point after every write that completed so far.
func (d *Disk) Mark(name string) error {
	if strings.ContainsAny(name, "\n") {
		return fmt.Errorf("crash disk: mark %q: a name is one line", name)
	}
	if _, err := io.WriteString(d.marks, name+"\n"); err != nil {
		return fmt.Errorf("crash disk: mark %s: %w", name, err)
	}
	if line, err := d.acks.ReadString('\n'); err != nil || line != "marked\n" {
		return fmt.Errorf("crash disk: mark %s: %q %v", name, line, err)
	}
	return nil
}

// Close detaches the device (which must no longer be mounted) and stops
// the server. It reports a failure to serve any request.
func (d *Disk) Close() error {
	if d.closed {
		return nil
	}
	d.closed = true
	var errs []error
	if d.loop != nil {
		d.loop.Close()
		// The kernel detaches an autoclear device once its last user
		// is gone; the FUSE file stays busy until then.
		for i := 0; ; i++ {
			back, err := loopdev.BackingFile(d.loop.Path)
			if err != nil || back == "" {
				break
			}
			if i == 500 {
				errs = append(errs, fmt.Errorf("crash disk: %s stays attached (still mounted?)", d.loop.Path))
				break
			}
			time.Sleep(10 * time.Millisecond)
		}
	}
	if err := unix.Unmount(d.mnt, 0); err != nil && !errors.Is(err, unix.EINVAL) {
		errs = append(errs, fmt.Errorf("crash disk: unmount %s: %w", d.mnt, err))
		unix.Unmount(d.mnt, unix.MNT_DETACH)
	}
	d.marks.Close()
	if err := d.srv.Wait(); err != nil {
		errs = append(errs, fmt.Errorf("crash disk: FUSE server: %w: %s", err, d.stderr.String()))
	} else if d.log, err = readLog(d.dir); err != nil {
		errs = append(errs, fmt.Errorf("crash disk: %w", err))
	}
	return errors.Join(errs...)
}

// Stats counts what the log holds.
type Stats struct {
	Writes, Flushes, Marks int
	// Bytes is the data written.
	Bytes int64
}

// Stats counts the log's entries.
func (d *Disk) Stats() Stats {
	var s Stats
	if d.log == nil {
		return s
	}
	for _, e := range d.log.entries {
		switch e.Kind {
		case kindWrite, kindZero:
			s.Writes++
			s.Bytes += e.N
		case kindFlush:
			s.Flushes++
		case kindMark:
			s.Marks++
		}
	}
	return s
}

// Point is a flush in the log: a moment a power cut could come and the
// disk keep every write logged before it.
type Point struct {
	// N numbers the flushes from 1; Flushes is how many there are.
	N, Flushes int
	// Marks are the names marked before the flush, in order.
	Marks []string
}

func (p Point) String() string {
	last := "none"
	if len(p.Marks) > 0 {
		last = p.Marks[len(p.Marks)-1]
	}
	return fmt.Sprintf("flush %d of %d (last mark before it: %s)", p.N, p.Flushes, last)
}

// Replay rebuilds the disk at every flush of the log, in order, as an
// image file that fn may change (mount it read-write to let the file
// system recover its journal): each is a fresh copy. It stops at the first
// error fn returns. Call it after Close.
func (d *Disk) Replay(ctx context.Context, fn func(p Point, image string) error) error {
	if d.log == nil {
		return errors.New("replay: the disk is not closed, or its server failed")
	}
	entries := d.log.entries
	data, err := os.Open(d.log.path)
	if err != nil {
		return fmt.Errorf("replay: %w", err)
	}
	defer data.Close()
	flushes := 0
	for _, e := range entries {
		if e.Kind == kindFlush {
			flushes++
		}
	}
	// The images live on a tmpfs of their own: the file systems' flushes
	// when a check mounts and unmounts them then cost no disk syncs.
	fi, err := os.Stat(d.base)
	if err != nil {
		return fmt.Errorf("replay: %w", err)
	}
	tmp := filepath.Join(d.dir, "replay")
	if err := os.Mkdir(tmp, 0o700); err != nil {
		return fmt.Errorf("replay: %w", err)
	}
	defer os.Remove(tmp)
	if err := unix.Mount("crashdisk-replay", tmp, "tmpfs", unix.MS_NOSUID|unix.MS_NODEV, fmt.Sprintf("size=%d,mode=0700", 2*fi.Size()+64<<20)); err != nil {
		return fmt.Errorf("replay: mount a tmpfs at %s: %w", tmp, err)
	}
	defer unix.Unmount(tmp, unix.MNT_DETACH)
	scratch := filepath.Join(tmp, "replay.img")
	if err := copySparse(scratch, d.base); err != nil {
		return fmt.Errorf("replay: %w", err)
	}
	defer os.Remove(scratch)
	img, err := os.OpenFile(scratch, os.O_RDWR, 0)
	if err != nil {
		return fmt.Errorf("replay: %w", err)
	}
	defer img.Close()
	point := Point{Flushes: flushes}
	buf := make([]byte, maxWrite)
	for _, e := range entries {
		if err := ctx.Err(); err != nil {
			return err
		}
		switch e.Kind {
		case kindWrite:
			if int64(cap(buf)) < e.N {
				buf = make([]byte, e.N)
			}
			b := buf[:e.N]
			if _, err := data.ReadAt(b, e.At); err != nil {
				return fmt.Errorf("replay: read log: %w", err)
			}
			if _, err := img.WriteAt(b, e.Off); err != nil {
				return fmt.Errorf("replay: %w", err)
			}
		case kindZero:
			if err := unix.Fallocate(int(img.Fd()), unix.FALLOC_FL_PUNCH_HOLE|unix.FALLOC_FL_KEEP_SIZE, e.Off, e.N); err != nil {
				return fmt.Errorf("replay: %w", err)
			}
		case kindMark:
			point.Marks = append(point.Marks, e.Name)
		case kindFlush:
			point.N++
			snap := filepath.Join(tmp, "point.img")
			if err := copySparse(snap, scratch); err != nil {
				return fmt.Errorf("replay: %w", err)
			}
			p := point
			p.Marks = append([]string(nil), point.Marks...)
			err := fn(p, snap)
			os.Remove(snap)
			if err != nil {
				return err
			}
		}
	}
	return nil
}

// copySparse copies the file src to dst, leaving src's holes holes.
func copySparse(dst, src string) error {
	in, err := os.Open(src)
	if err != nil {
		return err
	}
	defer in.Close()
	fi, err := in.Stat()
	if err != nil {
		return err
	}
	out, err := os.OpenFile(dst, os.O_RDWR|os.O_CREATE|os.O_TRUNC, 0o600)
	if err != nil {
		return err
	}
	defer out.Close()
	if err := out.Truncate(fi.Size()); err != nil {
		return err
	}
	buf := make([]byte, 1<<20)
	for pos := int64(0); pos < fi.Size(); {
		start, err := unix.Seek(int(in.Fd()), pos, unix.SEEK_DATA)
		if errors.Is(err, unix.ENXIO) {
			break // only a hole is left
		}
		if err != nil {
			return fmt.Errorf("copy %s: %w", src, err)
		}
		end, err := unix.Seek(int(in.Fd()), start, unix.SEEK_HOLE)
		if err != nil {
			return fmt.Errorf("copy %s: %w", src, err)
		}
		if _, err := io.CopyBuffer(io.NewOffsetWriter(out, start), io.NewSectionReader(in, start, end-start), buf); err != nil {
			return fmt.Errorf("copy %s: %w", src, err)
		}
		pos = end
	}
	return out.Close()
}

// MountImage attaches the image file to a loop device and mounts it at
// dir as fstype with the mount data opts; unmount undoes both.
func MountImage(ctx context.Context, image, dir, fstype, opts string) (unmount func() error, err error) {
	dev, err := loopdev.Attach(ctx, image, false)
	if err != nil {
		return nil, err
	}
	if err := unix.Mount(dev.Path, dir, fstype, 0, opts); err != nil {
		dev.Close()
		return nil, fmt.Errorf("mount %s (%s) at %s: %w", image, dev.Path, dir, err)
	}
	return func() error {
		err := unix.Unmount(dir, 0)
		dev.Close()
		if err != nil {
			return fmt.Errorf("unmount %s: %w", dir, err)
		}
		return nil
	}, nil
}

// Ext4 makes an image file of size bytes at path holding an empty ext4
// file system laid out for crash tests: 4 KiB blocks, inode tables written
// by mkfs (so the kernel zeroes none in the background), no discard, and
// a fixed UUID and directory hash seed, so that the same operations make
// the same writes on every run.
func Ext4(ctx context.Context, path string, size int64) error {
	f, err := os.Create(path)
	if err != nil {
		return err
	}
	err = f.Truncate(size)
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return err
	}
	const uuid = "6c3f1a9e-2b7d-4e58-9f0a-5d1c2e3b4a69"
	out, err := exec.CommandContext(ctx, "mkfs.ext4", "-F", "-q", "-b", "4096", "-N", "2048", "-U", uuid,
		"-E", "nodiscard,lazy_itable_init=0,hash_seed="+uuid, path).CombinedOutput()
	if err != nil {
		return fmt.Errorf("mkfs.ext4 %s: %w: %s", path, err, out)
	}
	return nil
}
