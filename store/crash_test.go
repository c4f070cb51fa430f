package store

import (
	"bytes"
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strings"
	"testing"

	"golang.org/x/sys/unix"

	"github.com/qvm-project/qvm/internal/crashdisk"
	"github.com/qvm-project/qvm/internal/testenv"
	"github.com/qvm-project/qvm/vm"
	"github.com/qvm-project/qvm/volume"
)

// crashOp is one step of the crash test's workload, run on the store in
// the logged file system.
type crashOp struct {
	name string
	run  func(ctx context.Context, st *Store) error
	// fails says the change must be refused (and leave nothing).
	fails bool
}

var errCrashAbort = errors.New("the change gives up")

// tplData is what the crash test writes into the template's root image
// (as the template's VM would) before a StandaloneVM copies it.
var tplData = bytes.Repeat([]byte("template root data "), 20000)

// crashWorkload creates, clones, changes and removes VMs, with one change
// that aborts after making a VM's directory.
func crashWorkload() []crashOp {
	update := func(fn func(ctx context.Context, tx *Tx) error) func(context.Context, *Store) error {
		return func(ctx context.Context, st *Store) error {
			return st.Update(ctx, vm.Host{}, func(tx *Tx) error { return fn(ctx, tx) })
		}
	}
	create := func(name string, class vm.Class, tpl string) crashOp {
		return crashOp{name: "create " + name, run: update(func(ctx context.Context, tx *Tx) error {
			_, err := tx.CreateVM(ctx, vm.CreateSpec{Name: name, Class: class, Label: "red", Template: tpl, UUID: testUUID(name)}, nil)
			return err
		})}
	}
	prop := func(name, p, v string) crashOp {
		return crashOp{name: "set " + name + " " + p, run: update(func(ctx context.Context, tx *Tx) error {
			return tx.Sys.SetProp(name, p, v)
		})}
	}
	remove := func(name string) crashOp {
		return crashOp{name: "remove " + name, run: update(func(ctx context.Context, tx *Tx) error {
			return tx.RemoveVM(name)
		})}
	}
	return []crashOp{
		create("tpl", vm.TemplateVM, ""),
		{name: "fill tpl root", run: func(ctx context.Context, st *Store) error {
			// Not a store change: the template's VM writing its disk.
			f, err := os.OpenFile(volume.ImagePath(st.VMDir("tpl", vm.TemplateVM), volume.Root), os.O_WRONLY, 0)
			if err != nil {
				return err
			}
			defer f.Close()
			if _, err := f.WriteAt(tplData, 1<<20); err != nil {
				return err
			}
			return f.Sync()
		}},
		create("app1", vm.AppVM, "tpl"),
		create("app2", vm.AppVM, "tpl"),
		prop("app1", "memory", "800"),
		create("sa", vm.StandaloneVM, "tpl"),
		{name: "clone app1", run: update(func(ctx context.Context, tx *Tx) error {
			_, err := tx.CloneVM(ctx, "app1", "app1-clone", testUUID("app1-clone"))
			return err
		})},
		remove("app2"),
		{name: "create doomed, abort", fails: true, run: update(func(ctx context.Context, tx *Tx) error {
			if _, err := tx.CreateVM(ctx, vm.CreateSpec{Name: "doomed", Class: vm.StandaloneVM, Label: "red", UUID: testUUID("doomed")}, nil); err != nil {
				return err
			}
			return errCrashAbort
		})},
		prop("sa", "label", "blue"),
		create("app3", vm.AppVM, "tpl"),
		remove("app1-clone"),
		remove("sa"),
		prop("app3", "vcpus", "1"),
		create("app2", vm.AppVM, "tpl"),
		remove("app1"),
	}
}

// TestCrashConsistency runs the workload on an ext4 file system whose
// disk logs every write and flush (package crashdisk: a block-level write
// log like dm-log-writes), then rebuilds the disk as it was at every flush
// (every state a power cut could leave), lets ext4 recover its journal,
// and checks at each:
//
//   - qvm.json is absent only before the first change returned, and
//     otherwise a complete document: byte for byte the one the last change
//     that returned before the flush left, or the next one (a change may be
//     durable before it returns, never only after);
//   - every VM directory without a pending marker is a VM's of that
//     document, and every VM of it has its directory and images (a
//     StandaloneVM's copy of its template's root holding the data);
//   - a writer after the crash settles it: its sweep leaves exactly the
//     VMs' directories, none pending.
//
// It runs twice: with the mount options that make only fsync durable (no
// replace-by-rename heuristic, no periodic commit within the run), where
// a store whose fsyncs were removed fails; and with dirsync as well, so
// that every directory change is durable on its own and the states
// between the steps of one change are checked too.
func TestCrashConsistency(t *testing.T) {
	testenv.RequireRoot(t)
	testenv.LookPath(t, "mkfs.ext4")
	testenv.LookPath(t, "e2fsck")
	if _, err := os.Stat("/dev/fuse"); err != nil {
		testenv.Missing(t, "FUSE (/dev/fuse): %v", err)
	}
	for _, mode := range []struct{ name, opts string }{
		{"fsync", "noauto_da_alloc,commit=3600"},
		{"dirsync", "noauto_da_alloc,commit=3600,dirsync"},
	} {
		t.Run(mode.name, func(t *testing.T) { crashTest(t, mode.opts) })
	}
}

func crashTest(t *testing.T, opts string) {
	ctx := context.Background()
	base := filepath.Join(t.TempDir(), "fresh.img")
	if err := crashdisk.Ext4(ctx, base, 96<<20); err != nil {
		t.Fatal(err)
	}
	disk, err := crashdisk.New(ctx, t.TempDir(), base)
	if err != nil {
		t.Fatal(err)
	}
	defer disk.Close()
	mnt := t.TempDir()
	if err := unix.Mount(disk.Device, mnt, "ext4", 0, opts); err != nil {
		t.Fatalf("mount %s: %v", disk.Device, err)
	}
	mounted := true
	defer func() {
		if mounted {
			unix.Unmount(mnt, 0)
		}
	}()
	st, err := Open(filepath.Join(mnt, "qvm"))
	if err != nil {
		t.Fatal(err)
	}
	ops := crashWorkload()
	// docs[k] is the document after the first k operations (nil: none).
	docs := [][]byte{nil}
	for _, op := range ops {
		err := op.run(ctx, st)
		if op.fails != (err != nil) {
			t.Fatalf("%s: %v", op.name, err)
		}
		doc, err := os.ReadFile(st.Path())
		if err != nil && !errors.Is(err, fs.ErrNotExist) {
			t.Fatal(err)
		}
		docs = append(docs, doc)
		if err := disk.Mark(op.name); err != nil {
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
	stats := disk.Stats()
	t.Logf("%d operations: %d writes (%d KiB), %d flushes", len(ops), stats.Writes, stats.Bytes>>10, stats.Flushes)

	check := t.TempDir()
	failures := 0
	err = disk.Replay(ctx, func(p crashdisk.Point, image string) error {
		unmount, err := crashdisk.MountImage(ctx, image, check, "ext4", "")
		if err != nil {
			return fmt.Errorf("%v: %w", p, err)
		}
		problems := checkCrashState(ctx, filepath.Join(check, "qvm"), docs, len(p.Marks))
		if err := unmount(); err != nil {
			return err
		}
		if out, err := exec.CommandContext(ctx, "e2fsck", "-fn", image).CombinedOutput(); err != nil {
			problems = append(problems, fmt.Sprintf("e2fsck: %v\n%s", err, out))
		}
		during := "after the last change"
		if len(p.Marks) < len(ops) {
			during = "during " + ops[len(p.Marks)].name
		}
		for _, pr := range problems {
			t.Errorf("power cut at %v, %s: %s", p, during, pr)
		}
		if len(problems) > 0 {
			failures++
			if failures == 5 {
				return errors.New("giving up after 5 failing crash states")
			}
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
}

// checkCrashState checks the store in dir as a power cut left it, after
// done operations had returned, and then recovers it; it returns the
// problems found.
func checkCrashState(ctx context.Context, dir string, docs [][]byte, done int) []string {
	var problems []string
	bad := func(format string, args ...any) { problems = append(problems, fmt.Sprintf(format, args...)) }
	st := &Store{dir: dir}
	doc, err := os.ReadFile(st.Path())
	if errors.Is(err, fs.ErrNotExist) || errors.Is(err, unix.ENOTDIR) {
		if docs[done] != nil {
			bad("qvm.json is missing after %d changes returned", done)
		}
		return problems
	}
	if err != nil {
		return append(problems, err.Error())
	}
	sys, err := decode(st.Path(), doc)
	if err != nil {
		bad("%v (%d bytes)", err, len(doc))
		return problems
	}
	next := done + 1
	if next >= len(docs) {
		next = done
	}
	if !bytes.Equal(doc, docs[done]) && !bytes.Equal(doc, docs[next]) {
		bad("qvm.json is neither the document after %d changes nor the next one:\n%s", done, doc)
	}
	// Directories without a marker belong to the document's VMs.
	for _, sub := range []string{appVMsDir, templatesDir} {
		ents, _ := os.ReadDir(filepath.Join(dir, sub))
		for _, e := range ents {
			vmdir := filepath.Join(dir, sub, e.Name())
			if strings.HasPrefix(e.Name(), newDirPrefix) || strings.HasPrefix(e.Name(), goneDirPrefix) {
				continue
			}
			if _, err := os.Lstat(filepath.Join(vmdir, pendingMarker)); err == nil {
				continue
			}
			if d, ok := sys.Lookup(e.Name()); !ok || st.VMDir(d.Name, d.Class) != vmdir {
				bad("%s/%s has no pending marker and is no VM's directory (files: %s)", sub, e.Name(), listDir(vmdir))
			}
		}
	}
	// The document's VMs have their directories and images.
	for _, d := range sys.VMs {
		if d.Class == vm.AdminVM {
			continue
		}
		vmdir := st.VMDir(d.Name, d.Class)
		specs, _ := volume.Layout(string(d.Class))
		for _, s := range specs {
			if !s.OwnImage() {
				continue
			}
			if _, err := os.Stat(volume.ImagePath(vmdir, s.Name)); err != nil {
				bad("VM %s is stored, its %s image is not: %v", d.Name, s.Name, err)
			}
		}
		if d.Name == "sa" {
			if sum, want := imageSum(volume.ImagePath(vmdir, volume.Root), int64(len(tplData))), sha256.Sum256(tplData); sum != want {
				bad("StandaloneVM sa is stored, its root image lacks the template's data")
			}
		}
	}
	if len(problems) > 0 {
		return problems
	}
	// The next writer settles what the crash left pending.
	if err := st.Update(ctx, vm.Host{}, func(tx *Tx) error { return nil }); err != nil {
		return append(problems, fmt.Sprintf("a change after the crash: %v", err))
	}
	want := map[string]bool{}
	for _, d := range sys.VMs {
		if d.Class != vm.AdminVM {
			want[st.VMDir(d.Name, d.Class)] = true
		}
	}
	for _, sub := range []string{appVMsDir, templatesDir} {
		ents, _ := os.ReadDir(filepath.Join(dir, sub))
		for _, e := range ents {
			vmdir := filepath.Join(dir, sub, e.Name())
			if !want[vmdir] {
				bad("after recovery, %s/%s is left (files: %s)", sub, e.Name(), listDir(vmdir))
			} else if _, err := os.Lstat(filepath.Join(vmdir, pendingMarker)); err == nil {
				bad("after recovery, %s is still pending", vmdir)
			}
			delete(want, vmdir)
		}
	}
	for vmdir := range want {
		bad("after recovery, %s is missing", vmdir)
	}
	return problems
}

// imageSum is the SHA-256 of n bytes at 1 MiB into an image.
func imageSum(path string, n int64) [32]byte {
	f, err := os.Open(path)
	if err != nil {
		return [32]byte{}
	}
	defer f.Close()
	h := sha256.New()
	io.Copy(h, io.NewSectionReader(f, 1<<20, n))
	var sum [32]byte
	copy(sum[:], h.Sum(nil))
	return sum
}

func listDir(dir string) string {
	ents, _ := os.ReadDir(dir)
	var names []string
	for _, e := range ents {
		names = append(names, e.Name())
	}
	sort.Strings(names)
	return strings.Join(names, " ")
}

// testUUID is a well-formed UUID for a test VM, the same for the same name.
func testUUID(name string) string {
	var n uint64
	for _, c := range name {
		n = n*131 + uint64(c)
	}
	return fmt.Sprintf("00000000-0000-4000-8000-%012x", n&0xffffffffffff)
}
