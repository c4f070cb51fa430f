package image

import (
	"bufio"
	"bytes"
	"compress/gzip"
	"debug/elf"
	"errors"
	"fmt"
	"io"
	"os"
	"path"
	"sort"
	"strings"

	"github.com/klauspost/compress/zstd"
	"github.com/u-root/u-root/pkg/cpio"

	"github.com/qvm-project/qvm/bootinit"
	"github.com/qvm-project/qvm/stubdom"
)

// Manifest is what an image must hold.
type Manifest struct {
	Files   []File
	Modules []bootinit.Module
	// KernelVersion names lib/modules/<KernelVersion>; empty accepts the
	// one version the image has.
	KernelVersion string
}

// DefaultManifest is what Build puts in an image.
func DefaultManifest() Manifest { return Manifest{Files: Files(), Modules: stubdom.Modules} }

// Contents summarises a checked image.
type Contents struct {
	// Entries is the number of records, UnpackedBytes the size of the
	// files once unpacked (what the stubdomain holds in RAM).
	Entries       int
	UnpackedBytes int64
	// Init is the file /init runs.
	Init string
	// Libraries are the shared libraries the image's programs load.
	Libraries []string
	// ModuleFiles are the kernel modules the init loads, dependencies
	// included.
	ModuleFiles []string
	// KernelVersion is the version directory of the modules.
	KernelVersion string
}

// libDirs are where the dynamic loader looks when a program says nothing
// else (Debian's multiarch directories first).
var libDirs = []string{"lib/x86_64-linux-gnu", "usr/lib/x86_64-linux-gnu", "lib64", "usr/lib64", "lib", "usr/lib"}

// CheckFile reads the (zstd, gzip or uncompressed) cpio image at p and
// checks it against m.
func CheckFile(p string, m Manifest) (Contents, error) {
	f, err := os.Open(p)
	if err != nil {
		return Contents{}, err
	}
	defer f.Close()
	return Check(f, m)
}

// Check reads a cpio image and verifies that it holds an init that is the
// stubdomain's, every file of m, each ELF program's interpreter and every
// shared library it needs (DT_NEEDED, found the way the dynamic loader
// would: RUNPATH, then the standard directories), and the kernel modules
// of m with their dependencies as modules.dep lists them. Every problem is
// reported, joined in one error.
func Check(r io.Reader, m Manifest) (Contents, error) {
	var c Contents
	img, err := readImage(r)
	if err != nil {
		return c, err
	}
	c.Entries = len(img.recs)
	var errs []error
	fail := func(format string, args ...any) { errs = append(errs, fmt.Errorf(format, args...)) }

	init, err := img.resolve("init")
	switch {
	case err != nil:
		fail("/init: %v", err)
	case !img.isELF(init):
		fail("/init is %s, not a program", init)
	default:
		c.Init = "/" + init
		if bb, err := img.resolve(path.Join("bbin", stubdom.InitName)); err != nil || bb != init {
			fail("/init runs /%s, which is not the %s command (bbin/%s: %v)", init, stubdom.InitName, stubdom.InitName, err)
		}
	}
	for _, f := range m.Files {
		p, err := img.resolve(f.Image)
		if err != nil {
			fail("%s (%s): %v", "/"+f.Image, f.Why, err)
			continue
		}
		if img.recs[p].Mode&cpio.S_IFMT != cpio.S_IFREG {
			fail("/%s (%s) is not a regular file", f.Image, f.Why)
		}
	}

	libs := map[string]bool{}
	var names []string
	for n := range img.recs {
		names = append(names, n)
	}
	sort.Strings(names)
	for _, n := range names {
		rec := img.recs[n]
		if rec.Mode&cpio.S_IFMT != cpio.S_IFREG {
			continue
		}
		c.UnpackedBytes += int64(rec.FileSize)
		if !img.isELF(n) {
			continue
		}
		ef, err := elf.NewFile(io.NewSectionReader(rec.ReaderAt, 0, int64(rec.FileSize)))
		if err != nil {
			fail("/%s: %v", n, err)
			continue
		}
		if ef.Type != elf.ET_EXEC && ef.Type != elf.ET_DYN {
			ef.Close()
			continue
		}
		for _, prog := range ef.Progs {
			if prog.Type != elf.PT_INTERP {
				continue
			}
			b, _ := io.ReadAll(prog.Open())
			interp := strings.TrimRight(string(b), "\x00")
			if _, err := img.resolve(strings.TrimPrefix(interp, "/")); err != nil {
				fail("/%s: its loader %s: %v", n, interp, err)
			}
		}
		needed, _ := ef.ImportedLibraries()
		var runpath []string
		for _, tag := range []elf.DynTag{elf.DT_RUNPATH, elf.DT_RPATH} {
			vals, _ := ef.DynString(tag)
			for _, v := range vals {
				for _, d := range strings.Split(v, ":") {
					d = strings.ReplaceAll(d, "$ORIGIN", "/"+path.Dir(n))
					runpath = append(runpath, strings.TrimPrefix(path.Clean(d), "/"))
				}
			}
		}
		ef.Close()
		for _, lib := range needed {
			found := ""
			for _, d := range append(runpath, libDirs...) {
				if p, err := img.resolve(path.Join(d, lib)); err == nil {
					found = p
					break
				}
			}
			if found == "" {
				fail("/%s needs %s, which is not in the image", n, lib)
				continue
			}
			libs["/"+found] = true
		}
	}
	for l := range libs {
		c.Libraries = append(c.Libraries, l)
	}
	sort.Strings(c.Libraries)

	c.KernelVersion, c.ModuleFiles, err = img.checkModules(m)
	if err != nil {
		errs = append(errs, err)
	}
	return c, errors.Join(errs...)
}

// checkModules verifies the modules of m and their dependencies.
func (img *image) checkModules(m Manifest) (string, []string, error) {
	kver := m.KernelVersion
	if kver == "" {
		var vers []string
		for n, r := range img.recs {
			if d, ok := strings.CutPrefix(n, "lib/modules/"); ok && !strings.Contains(d, "/") && r.Mode&cpio.S_IFMT == cpio.S_IFDIR {
				vers = append(vers, d)
			}
		}
		if len(vers) != 1 {
			return "", nil, fmt.Errorf("want one kernel module directory lib/modules/<version>, found %q", vers)
		}
		kver = vers[0]
	}
	dir := path.Join("lib/modules", kver)
	depFile, ok := img.recs[dir+"/modules.dep"]
	if !ok {
		return kver, nil, fmt.Errorf("/%s/modules.dep is missing", dir)
	}
	md, err := parseModulesDep(io.NewSectionReader(depFile.ReaderAt, 0, int64(depFile.FileSize)), "/"+dir+"/modules.dep")
	if err != nil {
		return kver, nil, err
	}
	deps := md.deps
	byName := map[string]string{}
	for _, mod := range md.files {
		byName[moduleName(mod)] = mod
	}
	builtin := map[string]bool{}
	if bi, ok := img.recs[dir+"/modules.builtin"]; ok {
		sc := bufio.NewScanner(io.NewSectionReader(bi.ReaderAt, 0, int64(bi.FileSize)))
		for sc.Scan() {
			builtin[moduleName(sc.Text())] = true
		}
	}
	var errs []error
	files := map[string]bool{}
	var visit func(mod string)
	visit = func(mod string) {
		if files[mod] {
			return
		}
		files[mod] = true
		if r, ok := img.recs[path.Join(dir, mod)]; !ok || r.Mode&cpio.S_IFMT != cpio.S_IFREG {
			errs = append(errs, fmt.Errorf("kernel module /%s is missing", path.Join(dir, mod)))
		}
		for _, d := range deps[mod] {
			if _, listed := deps[d]; !listed {
				errs = append(errs, fmt.Errorf("kernel module %s depends on %s, which modules.dep does not list", mod, d))
			}
			visit(d)
		}
	}
	for _, mod := range m.Modules {
		n := strings.ReplaceAll(mod.Name, "_", "-")
		if p, ok := byName[n]; ok {
			visit(p)
		} else if !builtin[n] {
			errs = append(errs, fmt.Errorf("kernel module %s: not in /%s/modules.dep nor built in", mod.Name, dir))
		}
	}
	var list []string
	for f := range files {
		list = append(list, "/"+path.Join(dir, f))
	}
	sort.Strings(list)
	return kver, list, errors.Join(errs...)
}

// image is a cpio archive in memory, by path without the leading '/'.
type image struct {
	recs map[string]cpio.Record
	// dirs are the directories that hold records, whether or not the
	// archive has a record of their own.
	dirs map[string]bool
}

// readImage decompresses (zstd or gzip, by magic number) and reads a cpio
// archive.
func readImage(r io.Reader) (*image, error) {
	br := bufio.NewReader(r)
	magic, _ := br.Peek(4)
	var src io.Reader = br
	switch {
	case bytes.HasPrefix(magic, []byte{0x28, 0xb5, 0x2f, 0xfd}):
		zr, err := zstd.NewReader(br)
		if err != nil {
			return nil, err
		}
		defer zr.Close()
		src = zr
	case bytes.HasPrefix(magic, []byte{0x1f, 0x8b}):
		zr, err := gzip.NewReader(br)
		if err != nil {
			return nil, err
		}
		src = zr
	}
	raw, err := io.ReadAll(src)
	if err != nil {
		return nil, fmt.Errorf("decompress the image: %w", err)
	}
	recs, err := cpio.ReadAllRecords(cpio.Newc.Reader(bytes.NewReader(raw)))
	if err != nil {
		return nil, fmt.Errorf("read the image's cpio archive: %w", err)
	}
	img := &image{recs: map[string]cpio.Record{}, dirs: map[string]bool{}}
	for _, rec := range recs {
		n := strings.TrimPrefix(path.Clean("/"+rec.Name), "/")
		if n == "" || rec.Name == cpio.Trailer {
			continue
		}
		img.recs[n] = rec
		for d := path.Dir(n); d != "."; d = path.Dir(d) {
			img.dirs[d] = true
		}
	}
	return img, nil
}

// resolve follows symbolic links (in every component of p) inside the
// image and returns the path of what p names.
func (img *image) resolve(p string) (string, error) {
	cur := ""
	rest := strings.Split(strings.Trim(path.Clean("/"+p), "/"), "/")
	for hops := 0; len(rest) > 0; {
		el := rest[0]
		rest = rest[1:]
		next := path.Join(cur, el)
		rec, ok := img.recs[next]
		if !ok && len(rest) > 0 && img.dirs[next] {
			cur = next
			continue
		}
		if !ok {
			return "", fmt.Errorf("/%s is not in the image", next)
		}
		if rec.Mode&cpio.S_IFMT != cpio.S_IFLNK {
			cur = next
			continue
		}
		if hops++; hops > 40 {
			return "", fmt.Errorf("/%s: too many symbolic links", p)
		}
		b, err := io.ReadAll(io.NewSectionReader(rec.ReaderAt, 0, int64(rec.FileSize)))
		if err != nil {
			return "", err
		}
		target := string(b)
		if !strings.HasPrefix(target, "/") {
			target = path.Join("/", cur, target)
		}
		parts := strings.Split(strings.Trim(path.Clean(target), "/"), "/")
		if len(parts) == 1 && parts[0] == "" {
			parts = nil
		}
		rest = append(parts, rest...)
		cur = ""
	}
	return cur, nil
}

// isELF reports whether the regular file at p starts with the ELF magic.
func (img *image) isELF(p string) bool {
	rec, ok := img.recs[p]
	if !ok || rec.Mode&cpio.S_IFMT != cpio.S_IFREG || rec.FileSize < 4 {
		return false
	}
	b := make([]byte, 4)
	if _, err := rec.ReadAt(b, 0); err != nil {
		return false
	}
	return string(b) == elf.ELFMAG
}
