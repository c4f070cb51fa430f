// Command mkstubdom builds qvm's Linux stubdomain (`make stubdom-image`):
// the kernel and the zstd-compressed initramfs libxl boots as an HVM
// guest's device-model domain, checked for completeness, plus an archive
// that installs both in dom0 under /usr/lib/qvm/stubdom. It prints the
// sizes and the stubdomain memory the image is made for.
//
//	go run ./stubdom/mkstubdom -uroot U -kernel VMLINUZ -kernel-root DIR -kernel-version V -out DIR
package main

import (
	"context"
	"flag"
	"fmt"
	"log/slog"
	"os"
	"strings"
	"time"

	"github.com/qvm-project/qvm/domconfig"
	"github.com/qvm-project/qvm/stubdom"
	"github.com/qvm-project/qvm/stubdom/image"
)

func main() {
	var spec image.Spec
	flag.StringVar(&spec.URoot, "uroot", "", "the u-root binary")
	flag.StringVar(&spec.ModuleDir, "module", ".", "this Go module's directory")
	flag.StringVar(&spec.Kernel, "kernel", "", "the stubdomain kernel (an uncompressed vmlinux: libxl loads it without decompressing)")
	flag.StringVar(&spec.KernelRoot, "kernel-root", "", "root of the unpacked kernel package (holds lib/modules/VERSION)")
	flag.StringVar(&spec.KernelVersion, "kernel-version", "", "the kernel's version (uname -r)")
	flag.StringVar(&spec.OutDir, "out", "build/stubdom", "output directory")
	kconfig := flag.String("kernel-config", "", "FRAGMENT,DOTCONFIG: check that the kernel's .config has every setting of its Kconfig fragment")
	flag.Parse()
	if *kconfig != "" {
		var ok bool
		spec.KernelFragment, spec.KernelDotConfig, ok = strings.Cut(*kconfig, ",")
		if !ok {
			fmt.Fprintln(os.Stderr, "mkstubdom: -kernel-config wants FRAGMENT,DOTCONFIG")
			os.Exit(2)
		}
	}
	for _, req := range []struct{ name, v string }{{"uroot", spec.URoot}, {"kernel", spec.Kernel}, {"kernel-root", spec.KernelRoot}, {"kernel-version", spec.KernelVersion}} {
		if req.v == "" {
			fmt.Fprintf(os.Stderr, "mkstubdom: -%s is required\n", req.name)
			os.Exit(2)
		}
	}
	spec.Log = slog.New(slog.NewTextHandler(os.Stderr, nil))
	spec.Stderr = os.Stderr
	start := time.Now()
	res, err := image.Build(context.Background(), spec)
	if err != nil {
		fmt.Fprintf(os.Stderr, "mkstubdom: %v\n", err)
		os.Exit(1)
	}
	c := res.Contents
	fmt.Printf("stubdom-image: kernel %s %.1f MiB (Linux %s)\n", res.Kernel, mib(res.KernelBytes), c.KernelVersion)
	fmt.Printf("stubdom-image: ramdisk %s %.1f MiB zstd (%d bytes; target < 16 MiB), %.1f MiB unpacked, %d entries, %d shared libraries, %d kernel modules; checked\n",
		res.Ramdisk, mib(res.RamdiskBytes), res.RamdiskBytes, mib(c.UnpackedBytes), c.Entries, len(c.Libraries), len(c.ModuleFiles))
	fmt.Printf("stubdom-image: dom0 archive %s (%s/{%s,%s})\n", res.Dom0Archive, stubdom.Dir, stubdom.KernelName, stubdom.RamdiskName)
	fmt.Printf("stubdom-image: stubdom_mem %d MiB + the guest's video RAM (16 MiB): %d MiB for the stubdomain (make bench-hvm measures what it uses)\n", domconfig.StubdomMemoryMiB, domconfig.StubdomMemoryMiB+16)
	fmt.Printf("stubdom-image: built in %.1f s\n", time.Since(start).Seconds())
}

func mib(n int64) float64 { return float64(n) / (1 << 20) }
