package image

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/exec"
	"path"
	"path/filepath"

	"github.com/qvm-project/qvm/stubdom"
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
	mods, err := StageModules(filepath.Join(spec.KernelRoot, "lib", "modules", spec.KernelVersion), modDir, stubdom.Modules)
	if err != nil {
		return res, fmt.Errorf("stubdom image: %w", err)
	}
	log.Info("kernel modules staged", "count", len(mods), "version", spec.KernelVersion)

	cpioPath := filepath.Join(spec.OutDir, "initramfs.cpio")
	args := []string{"-o", cpioPath, "-initcmd=" + stubdom.InitName, "-uinitcmd=", "-defaultsh=",
		"-files", modDir + ":" + path.Join("lib/modules", spec.KernelVersion)}
	for _, f := range files {
		args = append(args, "-files", f.Host+":"+f.Image)
	}
	args = append(args, "./cmd/"+stubdom.InitName)
	cmd := exec.CommandContext(ctx, spec.URoot, args...)
	cmd.Dir = spec.ModuleDir
	cmd.Stdout, cmd.Stderr = stderr, stderr
	if err := cmd.Run(); err != nil {
		return res, fmt.Errorf("stubdom image: u-root: %w", err)
	}

	// zstd: about 15% smaller than gzip -9 and several times faster to
	// unpack, which the stubdomain's kernel does at every start.
	res.Ramdisk = filepath.Join(spec.OutDir, stubdom.RamdiskName)
	z := exec.CommandContext(ctx, "zstd", "-q", "-f", "-19", "-T2", "--rm", "-o", res.Ramdisk, cpioPath)
	z.Stdout, z.Stderr = stderr, stderr
	if err := z.Run(); err != nil {
		return res, fmt.Errorf("stubdom image: zstd: %w", err)
	}
	if res.Contents, err = CheckFile(res.Ramdisk, Manifest{Files: files, Modules: stubdom.Modules, KernelVersion: spec.KernelVersion}); err != nil {
		return res, fmt.Errorf("stubdom image %s: %w", res.Ramdisk, err)
	}
	res.Kernel = filepath.Join(spec.OutDir, stubdom.KernelName)
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
