package stubdom

import (
	"bufio"
	"bytes"
	"compress/gzip"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/exec"
	"path"
	"path/filepath"
	"sort"
	"strings"

	"github.com/u-root/u-root/pkg/cpio"

	"github.com/qvm-project/qvm/bootinit"
)

// Spec is what Build makes the stubdomain from.
type Spec struct {
	// URoot is the u-root binary; ModuleDir the directory of this Go
	// module (u-root resolves ./cmd/stubdominit through `go list` there).
	URoot, ModuleDir string
	// Kernel is the stubdomain kernel (an uncompressed, stripped vmlinux) and KernelRoot
	// the root of its unpacked package, holding
	// lib/modules/<KernelVersion>/ with modules.dep.
	Kernel, KernelRoot, KernelVersion string
	// KernelFragment and KernelDotConfig, when set, are the Kconfig
	// fragment the kernel was configured from and its resulting .config:
	// Build checks that every setting of the fragment took.
	KernelFragment, KernelDotConfig string
	// OutDir receives the results (and a staging directory).
	OutDir string
	// Files overrides Files() (tests); nil means Files().
	Files []File
	// Log gets progress lines; nil discards them.
	Log *slog.Logger
	// Stderr gets u-root's and zstd's own output; nil discards it.
	Stderr io.Writer
}

// Result names what Build made.
type Result struct {
	// Kernel and Ramdisk are the stubdomain's files for libxl.
	Kernel, Ramdisk string
	// Dom0Archive is a cpio archive, to append to dom0's initramfs (or
	// unpack in dom0's root), that puts Kernel and Ramdisk under Dir.
	Dom0Archive string
	// Contents is what Check found in the ramdisk.
	Contents Contents
	// RamdiskBytes is the compressed size of the ramdisk (what libxl
	// loads), KernelBytes the kernel's.
	RamdiskBytes, KernelBytes int64
}

// Build makes the stubdomain's kernel and ramdisk in spec.OutDir and checks
// the ramdisk's contents.
func Build(ctx context.Context, spec Spec) (Result, error) {
	var res Result
	log := spec.Log
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	stderr := spec.Stderr
	if stderr == nil {
		stderr = io.Discard
	}
	files := spec.Files
	if files == nil {
		files = Files()
	}
	for _, f := range files {
		if _, err := os.Stat(f.Host); err != nil {
			return res, fmt.Errorf("stubdom image: %s (%s): %w", f.Host, f.Why, err)
		}
	}
	if spec.KernelFragment != "" {
		if err := CheckKernelConfigFiles(spec.KernelFragment, spec.KernelDotConfig); err != nil {
			return res, fmt.Errorf("stubdom image: kernel: %w", err)
		}
	}
	stage := filepath.Join(spec.OutDir, "stage")
	if err := os.RemoveAll(stage); err != nil {
		return res, err
	}
	modDir := filepath.Join(stage, "lib", "modules", spec.KernelVersion)
	mods, err := StageModules(filepath.Join(spec.KernelRoot, "lib", "modules", spec.KernelVersion), modDir, Modules)
	if err != nil {
		return res, fmt.Errorf("stubdom image: %w", err)
	}
	log.Info("kernel modules staged", "count", len(mods), "version", spec.KernelVersion)

	cpioPath := filepath.Join(spec.OutDir, "initramfs.cpio")
	args := []string{"-o", cpioPath, "-initcmd=" + InitName, "-uinitcmd=", "-defaultsh=",
		"-files", modDir + ":" + path.Join("lib/modules", spec.KernelVersion)}
	for _, f := range files {
		args = append(args, "-files", f.Host+":"+f.Image)
	}
	args = append(args, "./cmd/"+InitName)
	cmd := exec.CommandContext(ctx, spec.URoot, args...)
	cmd.Dir = spec.ModuleDir
	cmd.Stdout, cmd.Stderr = stderr, stderr
	if err := cmd.Run(); err != nil {
		return res, fmt.Errorf("stubdom image: u-root: %w", err)
	}

	// zstd: about 15% smaller than gzip -9 and several times faster to
	// unpack, which the stubdomain's kernel does at every start.
	res.Ramdisk = filepath.Join(spec.OutDir, RamdiskName)
	z := exec.CommandContext(ctx, "zstd", "-q", "-f", "-19", "-T2", "--rm", "-o", res.Ramdisk, cpioPath)
	z.Stdout, z.Stderr = stderr, stderr
	if err := z.Run(); err != nil {
		return res, fmt.Errorf("stubdom image: zstd: %w", err)
	}
	if res.Contents, err = CheckFile(res.Ramdisk, Manifest{Files: files, Modules: Modules, KernelVersion: spec.KernelVersion}); err != nil {
		return res, fmt.Errorf("stubdom image %s: %w", res.Ramdisk, err)
	}
	res.Kernel = filepath.Join(spec.OutDir, KernelName)
	if err := copyFile(spec.Kernel, res.Kernel); err != nil {
		return res, fmt.Errorf("stubdom image: kernel: %w", err)
	}
	for p, n := range map[string]*int64{res.Ramdisk: &res.RamdiskBytes, res.Kernel: &res.KernelBytes} {
		fi, err := os.Stat(p)
		if err != nil {
			return res, err
		}
		*n = fi.Size()
	}
	res.Dom0Archive = filepath.Join(spec.OutDir, "stubdom-dom0.cpio.gz")
	if err := WriteDom0Archive(res.Dom0Archive, res.Kernel, res.Ramdisk); err != nil {
		return res, fmt.Errorf("stubdom image: %w", err)
	}
	return res, os.RemoveAll(stage)
}

// StageModules copies the modules named in want, and every module they
// depend on, from srcDir (a lib/modules/<version> directory with
// modules.dep) to dstDir, and writes there a modules.dep and
// modules.builtin listing only those. It returns the staged module files
// (relative paths). Modules built into the kernel need no file.
func StageModules(srcDir, dstDir string, want []bootinit.Module) ([]string, error) {
	deps, err := readModulesDep(filepath.Join(srcDir, "modules.dep"))
	if errors.Is(err, os.ErrNotExist) {
		deps = map[string][]string{} // a kernel without modules
	} else if err != nil {
		return nil, err
	}
	builtin, err := readLines(filepath.Join(srcDir, "modules.builtin"))
	if err != nil && !errors.Is(err, os.ErrNotExist) {
		return nil, err
	}
	byName := map[string]string{}
	for p := range deps {
		byName[moduleName(p)] = p
	}
	builtinByName := map[string]string{}
	for _, p := range builtin {
		builtinByName[moduleName(p)] = p
	}
	need := map[string]bool{}
	var keepBuiltin []string
	var visit func(p string)
	visit = func(p string) {
		if need[p] {
			return
		}
		need[p] = true
		for _, d := range deps[p] {
			visit(d)
		}
	}
	for _, m := range want {
		n := strings.ReplaceAll(m.Name, "_", "-")
		if p, ok := byName[n]; ok {
			visit(p)
		} else if p, ok := builtinByName[n]; ok {
			keepBuiltin = append(keepBuiltin, p)
		} else {
			return nil, fmt.Errorf("kernel module %s: not in %s/modules.dep nor built in", m.Name, srcDir)
		}
	}
	var list []string
	for p := range need {
		list = append(list, p)
	}
	sort.Strings(list)
	var dep bytes.Buffer
	for _, p := range list {
		if err := copyFile(filepath.Join(srcDir, p), filepath.Join(dstDir, p)); err != nil {
			return nil, fmt.Errorf("kernel module %s: %w", p, err)
		}
		fmt.Fprintf(&dep, "%s:", p)
		for _, d := range deps[p] {
			fmt.Fprintf(&dep, " %s", d)
		}
		dep.WriteByte('\n')
	}
	if err := os.MkdirAll(dstDir, 0o755); err != nil {
		return nil, err
	}
	if err := os.WriteFile(filepath.Join(dstDir, "modules.dep"), dep.Bytes(), 0o644); err != nil {
		return nil, err
	}
	sort.Strings(keepBuiltin)
	bi := strings.Join(keepBuiltin, "\n")
	if bi != "" {
		bi += "\n"
	}
	if err := os.WriteFile(filepath.Join(dstDir, "modules.builtin"), []byte(bi), 0o644); err != nil {
		return nil, err
	}
	return list, nil
}

// moduleName is the module name of a module file path, with '-'.
func moduleName(p string) string {
	b := path.Base(p)
	for _, ext := range []string{".ko", ".ko.xz", ".ko.gz", ".ko.zst"} {
		if s, ok := strings.CutSuffix(b, ext); ok {
			b = s
			break
		}
	}
	return strings.ReplaceAll(b, "_", "-")
}

// modulesDep is a parsed modules.dep: each module file's dependencies,
// and the module files in the order the file lists them.
type modulesDep struct {
	deps  map[string][]string
	files []string
}

// parseModulesDep parses modules.dep ("path: dep dep ...", one a line;
// blank lines are skipped) from r; name is for errors.
func parseModulesDep(r io.Reader, name string) (modulesDep, error) {
	md := modulesDep{deps: map[string][]string{}}
	sc := bufio.NewScanner(r)
	for n := 1; sc.Scan(); n++ {
		line := strings.TrimSpace(sc.Text())
		if line == "" {
			continue
		}
		mod, rest, ok := strings.Cut(line, ":")
		mod = strings.TrimSpace(mod)
		if !ok || mod == "" {
			return modulesDep{}, fmt.Errorf("%s line %d: %q is not \"module: deps\"", name, n, line)
		}
		md.deps[mod] = strings.Fields(rest)
		md.files = append(md.files, mod)
	}
	if err := sc.Err(); err != nil {
		return modulesDep{}, fmt.Errorf("%s: %w", name, err)
	}
	return md, nil
}

// readModulesDep parses the modules.dep file at p.
func readModulesDep(p string) (map[string][]string, error) {
	md, err := readModulesDepFile(p)
	return md.deps, err
}

func readModulesDepFile(p string) (modulesDep, error) {
	f, err := os.Open(p)
	if err != nil {
		return modulesDep{}, err
	}
	defer f.Close()
	return parseModulesDep(f, p)
}

// LoadOrder lists the modules of the modules.dep file at p so that each
// comes after the modules it depends on (and otherwise in the file's
// order), the order a loader without depmod's help must insert them in.
func LoadOrder(p string) ([]string, error) {
	md, err := readModulesDepFile(p)
	if err != nil {
		return nil, err
	}
	done := map[string]bool{}
	var out []string
	var visit func(m string)
	visit = func(m string) {
		if done[m] {
			return
		}
		done[m] = true
		for _, d := range md.deps[m] {
			visit(d)
		}
		out = append(out, m)
	}
	for _, m := range md.files {
		visit(m)
	}
	return out, nil
}

func readLines(p string) ([]string, error) {
	f, err := os.Open(p)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	var out []string
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		if line := strings.TrimSpace(sc.Text()); line != "" {
			out = append(out, line)
		}
	}
	return out, sc.Err()
}

// WriteDom0Archive writes a gzip-compressed cpio archive that holds kernel
// and ramdisk as Dir/KernelName and Dir/RamdiskName. Their contents are
// compressed already, so it is stored with the fastest level; it is
// compressed at all because the kernel reads an uncompressed archive that
// follows a compressed one only at a 4-byte aligned offset.
func WriteDom0Archive(out, kernel, ramdisk string) error {
	f, err := os.Create(out)
	if err != nil {
		return err
	}
	defer f.Close()
	// The directories are written with the modes dom0 has for them: the
	// kernel applies an archive's mode to a directory that exists.
	var recs []cpio.Record
	d := ""
	for _, el := range strings.Split(Dir[1:], "/") {
		d = path.Join(d, el)
		recs = append(recs, cpio.Directory(d, 0o755))
	}
	for _, e := range []struct{ src, name string }{{kernel, KernelName}, {ramdisk, RamdiskName}} {
		b, err := os.ReadFile(e.src)
		if err != nil {
			return err
		}
		recs = append(recs, cpio.StaticRecord(b, cpio.Info{Name: path.Join(Dir[1:], e.name), Mode: cpio.S_IFREG | 0o644}))
	}
	if err := WriteGzipCPIO(f, recs); err != nil {
		return fmt.Errorf("write %s: %w", out, err)
	}
	return f.Close()
}

// WriteGzipCPIO writes recs to w as a newc cpio archive with its trailer,
// compressed with gzip's fastest level (what an initramfs, or an archive
// appended to one, needs).
func WriteGzipCPIO(w io.Writer, recs []cpio.Record) error {
	zw, err := gzip.NewWriterLevel(w, gzip.BestSpeed)
	if err != nil {
		return err
	}
	cw := cpio.Newc.Writer(zw)
	if err := cpio.WriteRecords(cw, recs); err != nil {
		return err
	}
	if err := cpio.WriteTrailer(cw); err != nil {
		return err
	}
	return zw.Close()
}

func copyFile(src, dst string) error {
	in, err := os.Open(src)
	if err != nil {
		return err
	}
	defer in.Close()
	if err := os.MkdirAll(filepath.Dir(dst), 0o755); err != nil {
		return err
	}
	out, err := os.Create(dst)
	if err != nil {
		return err
	}
	if _, err := io.Copy(out, in); err != nil {
		out.Close()
		return err
	}
	return out.Close()
}
