package e2e

import (
	"bytes"
	"compress/gzip"
	"debug/elf"
	"io"
	"os"
	"path"
	"strings"
	"testing"

	"github.com/qvm-project/qvm/e2e/xenvm"
	"github.com/qvm-project/qvm/internal/testenv"
	"github.com/u-root/u-root/pkg/cpio"
)

// image is an initramfs read into memory: path -> record.
type image map[string]cpio.Record

func readImage(t *testing.T, p string) image {
	t.Helper()
	f, err := os.Open(p)
	if err != nil {
		testenv.Missing(t, "image not built (run `make dom0-image guest-image`): %v", err)
	}
	defer f.Close()
	zr, err := gzip.NewReader(f)
	if err != nil {
		t.Fatalf("%s: %v", p, err)
	}
	raw, err := io.ReadAll(zr)
	if err != nil {
		t.Fatalf("%s: %v", p, err)
	}
	recs, err := cpio.ReadAllRecords(cpio.Newc.Reader(bytes.NewReader(raw)))
	if err != nil {
		t.Fatalf("%s: %v", p, err)
	}
	img := image{}
	for _, r := range recs {
		img[strings.TrimPrefix(path.Clean(r.Name), "/")] = r
	}
	return img
}

func (img image) content(t *testing.T, name string) []byte {
	t.Helper()
	r, ok := img[name]
	if !ok {
		t.Fatalf("image has no %s", name)
	}
	b, err := io.ReadAll(io.NewSectionReader(r.ReaderAt, 0, int64(r.FileSize)))
	if err != nil {
		t.Fatalf("%s: %v", name, err)
	}
	return b
}

func (img image) requireLink(t *testing.T, name, target string) {
	t.Helper()
	r, ok := img[name]
	if !ok {
		t.Errorf("image has no %s", name)
		return
	}
	if r.Mode&cpio.S_IFMT != cpio.S_IFLNK {
		t.Errorf("%s is not a symlink", name)
		return
	}
	if got := string(img.content(t, name)); got != target {
		t.Errorf("%s -> %s, want -> %s", name, got, target)
	}
}

// requireLibs checks that every ELF executable or library in the image
// finds the shared libraries it needs in the image.
func (img image) requireLibs(t *testing.T) {
	t.Helper()
	have := map[string]bool{}
	for name := range img {
		have[path.Base(name)] = true
	}
	for name, r := range img {
		if r.Mode&cpio.S_IFMT != cpio.S_IFREG || r.FileSize < 4 {
			continue
		}
		f, err := elf.NewFile(io.NewSectionReader(r.ReaderAt, 0, int64(r.FileSize)))
		if err != nil {
			continue // not an ELF file
		}
		if f.Type != elf.ET_DYN && f.Type != elf.ET_EXEC {
			continue // kernel modules are ET_REL
		}
		libs, err := f.ImportedLibraries()
		if err != nil {
			t.Errorf("%s: %v", name, err)
			continue
		}
		for _, l := range libs {
			if !have[path.Base(l)] {
				t.Errorf("%s needs %s, which is not in the image", name, l)
			}
		}
	}
}

// TestDom0ImageContents checks the dom0 image without booting it: our init,
// qvm, Xen's userspace with every library it needs, and the modules.
func TestDom0ImageContents(t *testing.T) {
	p, err := xenvm.DefaultParts()
	if err != nil {
		testenv.Missing(t, "%v", err)
	}
	img := readImage(t, p.Dom0Image)
	img.requireLink(t, "init", "bbin/dom0init")
	for _, f := range []string{
		"bin/qvm",
		"bin/qvm-hotplug",
		"bin/qvm-stubdom-dm",
		"usr/lib/xen-4.17/bin/xl", "usr/lib/xen-4.17/bin/xenstored", "usr/lib/xen-4.17/bin/xenconsoled",
		"usr/lib/xen-4.17/bin/xen-init-dom0", "usr/lib/xen-4.17/bin/vchan-socket-proxy",
		"usr/bin/vchan-socket-proxy", "usr/bin/xenstore-read",
		"lib/x86_64-linux-gnu/libgcc_s.so.1",
	} {
		if _, ok := img[f]; !ok {
			t.Errorf("dom0 image lacks %s", f)
		}
	}
	var deps string
	for name := range img {
		if strings.HasPrefix(name, "lib/modules/") && strings.HasSuffix(name, "/modules.dep") {
			deps = string(img.content(t, name))
		}
	}
	if deps == "" {
		t.Fatal("dom0 image has no lib/modules/*/modules.dep")
	}
	for _, m := range []string{"xen-evtchn", "xen-privcmd", "xen-gntdev", "xen-gntalloc", "xenfs", "xen-blkback", "xen-netback", "loop", "9pnet_virtio", "9p", "virtio_pci",
		"crc32c_generic", "nf_tables", "nft_ct", "nf_conntrack"} {
		if !strings.Contains(deps, "/"+m+".ko:") {
			t.Errorf("modules.dep lacks %s", m)
		}
	}
	img.requireLibs(t)
}

// TestGuestImageContents checks the tiny guest image.
func TestGuestImageContents(t *testing.T) {
	p, err := xenvm.DefaultParts()
	if err != nil {
		testenv.Missing(t, "%v", err)
	}
	img := readImage(t, p.GuestImage)
	img.requireLink(t, "init", "bbin/guestinit")
	for f, why := range map[string]string{
		"bbin/poweroff":     "the kernel's /sbin/poweroff on xl shutdown",
		"bbin/qrexec-agent": "qvm-run's agent",
		"bin/busybox":       "the agent's /bin/sh and commands",
	} {
		if _, ok := img[f]; !ok {
			t.Errorf("guest image lacks %s (%s)", f, why)
		}
	}
	img.requireLibs(t)
}
