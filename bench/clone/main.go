// Command clone benchmarks the copy behind qvm-clone (volume.Copy) against
// `cp --reflink=auto --sparse=always` of the same image, in one run on one
// scratch filesystem it makes (and removes) on a loop device.
//
// The image is a 10 GiB sparse file holding 200 MiB of data in several
// extents. Each round times both copies, alternating which goes first,
// with the source evicted from the page cache before each copy; the medians
// are printed. volume.Copy fsyncs its result (a clone must survive a crash)
// while cp does not, so cp is also timed followed by an fsync of its copy
// (`cp+sync`); the last line compares against cp+sync, the same durable
// result:
//
//	clone Z ms cp W ms ratio W/Z
//
// With -reflink-report it first shows what a reflink clone costs on XFS for
// 200 MiB and 2 GiB of data (it should not depend on the data size).
//
// It needs root (loop devices, mount) and mkfs for the chosen filesystem.
//
//	go run ./bench/clone [-fs ext4] [-runs 7] [-reflink-report]
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"math/rand/v2"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"slices"
	"syscall"
	"time"

	"github.com/qvm-project/qvm/volume"
	"github.com/qvm-project/qvm/volume/loopfs"
	"golang.org/x/sys/unix"
)

func main() {
	fsType := flag.String("fs", string(loopfs.Ext4), "scratch filesystem for the comparison (one without reflink: ext4, xfs-noreflink, tmpfs)")
	size := flag.String("size", "10GiB", "apparent size of the image")
	data := flag.String("data", "200MiB", "bytes of data in the image")
	extents := flag.Int("extents", 8, "number of data extents the data is spread over")
	runs := flag.Int("runs", 11, "rounds (each times both copies); medians are reported")
	reflinkReport := flag.Bool("reflink-report", false, "first time reflink clones on XFS with 200 MiB and 2 GiB of data")
	flag.Parse()

	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	err := run(ctx, *fsType, *size, *data, *extents, *runs, *reflinkReport)
	stop()
	if err != nil {
		fmt.Fprintln(os.Stderr, "bench/clone:", err)
		os.Exit(1)
	}
}

func run(ctx context.Context, fsType, sizeStr, dataStr string, extents, runs int, reflinkReport bool) error {
	if os.Geteuid() != 0 {
		return errors.New("needs root (it makes a filesystem on a loop device)")
	}
	size, err := volume.ParseSize(sizeStr)
	if err != nil {
		return fmt.Errorf("-size: %w", err)
	}
	data, err := volume.ParseSize(dataStr)
	if err != nil {
		return fmt.Errorf("-data: %w", err)
	}
	if extents < 1 || data/int64(extents) > size/int64(extents) || runs < 1 {
		return errors.New("need -extents >= 1, -runs >= 1 and -data <= -size")
	}
	work, err := os.MkdirTemp("", "qvm-bench-clone-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(work)

	if reflinkReport {
		if err := reportReflink(ctx, work, size, extents, runs); err != nil {
			return err
		}
	}

	// Room for the source and two copies, plus filesystem overhead.
	fs, err := loopfs.Make(ctx, work, loopfs.Type(fsType), 3*data+512*volume.MiB)
	if err != nil {
		return err
	}
	defer fs.Close()
	src := fs.Path("root.img")
	if err := makeImage(src, size, data, extents); err != nil {
		return err
	}
	fmt.Printf("image: %s apparent, %s data in %d extents, on %s (%s)\n", sizeStr, dataStr, extents, fsType, fs.Device)

	var ours, cp, cpSync []time.Duration
	var method volume.Method
	for i := 0; i < runs; i++ {
		timeOurs := func() error {
			d, m, err := timeCopy(ctx, src, fs.Path("clone.img"))
			ours, method = append(ours, d), m
			return err
		}
		timeCp := func() error {
			d, ds, err := timeCp(ctx, src, fs.Path("cp.img"))
			cp, cpSync = append(cp, d), append(cpSync, ds)
			return err
		}
		first, second := timeOurs, timeCp
		if i%2 == 1 {
			first, second = timeCp, timeOurs
		}
		if err := first(); err != nil {
			return err
		}
		if err := second(); err != nil {
			return err
		}
	}
	z, w, ws := median(ours), median(cp), median(cpSync)
	fmt.Printf("volume.Copy (%s, fsynced): median %.1f ms of %s\n", method, ms(z), fmtAll(ours))
	fmt.Printf("cp --reflink=auto --sparse=always: median %.1f ms of %s\n", ms(w), fmtAll(cp))
	fmt.Printf("cp --reflink=auto --sparse=always + fsync: median %.1f ms of %s\n", ms(ws), fmtAll(cpSync))
	fmt.Printf("ratio without cp's fsync: %.2f\n", ms(w)/ms(z))
	fmt.Printf("clone %.1f ms cp %.1f ms ratio %.2f\n", ms(z), ms(ws), ms(ws)/ms(z))
	return nil
}

// makeImage writes a sparse image of size bytes with data bytes of random
// content spread evenly over n extents, fsynced.
func makeImage(path string, size, data int64, n int) error {
	f, err := os.OpenFile(path, os.O_RDWR|os.O_CREATE|os.O_EXCL, 0o600)
	if err != nil {
		return err
	}
	defer f.Close()
	if err := f.Truncate(size); err != nil {
		return err
	}
	rng := rand.NewChaCha8([32]byte{42})
	per := data / int64(n) / 4096 * 4096
	stride := size / int64(n) / 4096 * 4096
	buf := make([]byte, 4*volume.MiB)
	for i := 0; i < n; i++ {
		length := per
		if i == n-1 {
			length = data - per*int64(n-1)
		}
		for off := int64(0); off < length; off += int64(len(buf)) {
			b := buf[:min(int64(len(buf)), length-off)]
			rng.Read(b)
			if _, err := f.WriteAt(b, int64(i)*stride+off); err != nil {
				return err
			}
		}
	}
	return f.Sync()
}

// evict drops a file's pages from the page cache (after writing them back),
// so each copy reads its source from the device alike.
func evict(path string) error {
	f, err := os.Open(path)
	if err != nil {
		return err
	}
	defer f.Close()
	if err := f.Sync(); err != nil {
		return err
	}
	return unix.Fadvise(int(f.Fd()), 0, 0, unix.FADV_DONTNEED)
}

// settle removes a copy and waits until the filesystem has written
// everything back, so one measurement does not pay for the previous one.
func settle(src, dst string) error {
	if err := os.Remove(dst); err != nil && !errors.Is(err, os.ErrNotExist) {
		return err
	}
	fd, err := unix.Open(filepath.Dir(dst), unix.O_RDONLY, 0)
	if err != nil {
		return err
	}
	defer unix.Close(fd)
	if err := unix.Syncfs(fd); err != nil {
		return err
	}
	return evict(src)
}

func timeCopy(ctx context.Context, src, dst string) (time.Duration, volume.Method, error) {
	if err := settle(src, dst); err != nil {
		return 0, 0, err
	}
	start := time.Now()
	res, err := volume.Copy(ctx, src, dst)
	d := time.Since(start)
	if err != nil {
		return 0, 0, err
	}
	return d, res.Method, settle(src, dst)
}

// timeCp times cp alone and cp followed by an fsync of its copy.
func timeCp(ctx context.Context, src, dst string) (time.Duration, time.Duration, error) {
	if err := settle(src, dst); err != nil {
		return 0, 0, err
	}
	start := time.Now()
	out, err := exec.CommandContext(ctx, "cp", "--reflink=auto", "--sparse=always", src, dst).CombinedOutput()
	d := time.Since(start)
	if err != nil {
		return 0, 0, fmt.Errorf("cp: %w: %s", err, out)
	}
	f, err := os.Open(dst)
	if err != nil {
		return 0, 0, err
	}
	err = f.Sync()
	f.Close()
	ds := time.Since(start)
	if err != nil {
		return 0, 0, err
	}
	return d, ds, settle(src, dst)
}

// reportReflink times reflink clones on XFS of images holding 200 MiB and
// 2 GiB of data.
func reportReflink(ctx context.Context, work string, size int64, extents, runs int) error {
	fs, err := loopfs.Make(ctx, work, loopfs.XFS, 3*volume.GiB)
	if err != nil {
		return err
	}
	defer fs.Close()
	for _, data := range []int64{200 * volume.MiB, 2 * volume.GiB} {
		src := fs.Path(fmt.Sprintf("root-%d.img", data))
		if err := makeImage(src, size, data, extents); err != nil {
			return err
		}
		var ds []time.Duration
		var method volume.Method
		for i := 0; i < runs; i++ {
			d, m, err := timeCopy(ctx, src, fs.Path("clone.img"))
			if err != nil {
				return err
			}
			ds, method = append(ds, d), m
		}
		fmt.Printf("xfs reflink clone of %s with %s data (%s): median %.2f ms of %s\n",
			human(size), human(data), method, ms(median(ds)), fmtAll(ds))
		if err := os.Remove(src); err != nil {
			return err
		}
	}
	return nil
}

func median(ds []time.Duration) time.Duration {
	s := slices.Clone(ds)
	slices.Sort(s)
	if len(s)%2 == 1 {
		return s[len(s)/2]
	}
	return (s[len(s)/2-1] + s[len(s)/2]) / 2
}

func ms(d time.Duration) float64 { return float64(d) / float64(time.Millisecond) }

func fmtAll(ds []time.Duration) string {
	s := "["
	for i, d := range ds {
		if i > 0 {
			s += " "
		}
		s += fmt.Sprintf("%.1f", ms(d))
	}
	return s + "] ms"
}

func human(n int64) string {
	if n >= volume.GiB && n%volume.GiB == 0 {
		return fmt.Sprintf("%d GiB", n/volume.GiB)
	}
	return fmt.Sprintf("%d MiB", n/volume.MiB)
}
