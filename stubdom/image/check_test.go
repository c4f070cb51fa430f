package image

import (
	"bytes"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"testing"

	"github.com/u-root/u-root/pkg/cpio"

	"github.com/qvm-project/qvm/bootinit"
	"github.com/qvm-project/qvm/e2e/xenvm"
	"github.com/qvm-project/qvm/internal/testenv"
	"github.com/qvm-project/qvm/stubdom"
)

// imageBuilder makes small cpio images in memory for Check.
type imageBuilder struct{ recs []cpio.Record }

func (b *imageBuilder) file(name string, data []byte, mode uint64) {
	b.recs = append(b.recs, cpio.StaticRecord(data, cpio.Info{Name: name, Mode: cpio.S_IFREG | mode}))
}

func (b *imageBuilder) host(t *testing.T, hostPath, name string) {
	t.Helper()
	data, err := os.ReadFile(hostPath)
	if err != nil {
		t.Fatal(err)
	}
	b.file(name, data, 0o755)
}

func (b *imageBuilder) bytes(t *testing.T) []byte {
	t.Helper()
	var buf bytes.Buffer
	w := cpio.Newc.Writer(&buf)
	if err := cpio.WriteRecords(w, b.recs); err != nil {
		t.Fatal(err)
	}
	if err := cpio.WriteTrailer(w); err != nil {
		t.Fatal(err)
	}
	return buf.Bytes()
}

// selfImage is an image whose init is this (static or dynamic) test
// binary, with the libraries it needs from the host, one file of the
// manifest, and a module directory.
func selfImage(t *testing.T, drop string) ([]byte, Manifest) {
	t.Helper()
	if runtime.GOOS != "linux" {
		t.Skip("linux only")
	}
	// A small dynamic ELF from the host with its libraries.
	const prog = "/usr/lib/xen-4.17/bin/vchan-socket-proxy"
	testenv.RequireFile(t, prog)
	b := &imageBuilder{}
	b.recs = append(b.recs, cpio.Directory("bbin", 0o755))
	b.host(t, "/bin/true", "bbin/bb")
	b.recs = append(b.recs, cpio.Symlink("bbin/"+stubdom.InitName, "bb"), cpio.Symlink("init", "bbin/"+stubdom.InitName))
	b.host(t, prog, prog[1:])
	libs := []string{
		"/lib/x86_64-linux-gnu/libxenvchan.so.4.17", "/lib/x86_64-linux-gnu/libxenstore.so.4",
		"/lib/x86_64-linux-gnu/libxenctrl.so.4.17", "/lib/x86_64-linux-gnu/libxengnttab.so.1",
		"/lib/x86_64-linux-gnu/libxenevtchn.so.1", "/lib/x86_64-linux-gnu/libc.so.6",
		"/lib/x86_64-linux-gnu/libxentoollog.so.1", "/lib/x86_64-linux-gnu/libxencall.so.1",
		"/lib/x86_64-linux-gnu/libxenforeignmemory.so.1", "/lib/x86_64-linux-gnu/libxendevicemodel.so.1",
		"/lib/x86_64-linux-gnu/libxentoolcore.so.1", "/lib/x86_64-linux-gnu/ld-linux-x86-64.so.2",
	}
	for _, l := range libs {
		if _, err := os.Stat(l); err != nil {
			continue
		}
		if drop != "" && strings.HasSuffix(l, drop) {
			continue
		}
		real, err := filepath.EvalSymlinks(l)
		if err != nil {
			t.Fatal(err)
		}
		b.host(t, real, l[1:])
	}
	b.recs = append(b.recs, cpio.Directory("lib64", 0o755), cpio.Symlink("lib64/ld-linux-x86-64.so.2", "/lib/x86_64-linux-gnu/ld-linux-x86-64.so.2"))
	b.file("usr/share/qemu/keymaps/en-us", []byte("include common\n"), 0o644)
	b.recs = append(b.recs, cpio.Directory("lib/modules/9.9.9", 0o755))
	b.file("lib/modules/9.9.9/modules.dep", []byte("kernel/net/bridge/bridge.ko: kernel/net/802/stp.ko\nkernel/net/802/stp.ko:\n"), 0o644)
	b.file("lib/modules/9.9.9/modules.builtin", []byte("kernel/drivers/xen/xen-privcmd.ko\n"), 0o644)
	b.file("lib/modules/9.9.9/kernel/net/bridge/bridge.ko", []byte("ko"), 0o644)
	if drop != "stp.ko" {
		b.file("lib/modules/9.9.9/kernel/net/802/stp.ko", []byte("ko"), 0o644)
	}
	m := Manifest{
		Files:   []File{{Host: "", Image: "usr/share/qemu/keymaps/en-us", Why: "keymap"}},
		Modules: []bootinit.Module{{Name: "bridge"}, {Name: "xen-privcmd", Params: "unrestricted=1"}},
	}
	return b.bytes(t), m
}

func TestCheckComplete(t *testing.T) {
	img, m := selfImage(t, "")
	c, err := Check(bytes.NewReader(img), m)
	if err != nil {
		t.Fatal(err)
	}
	if c.Init != "/bbin/bb" || c.KernelVersion != "9.9.9" || len(c.ModuleFiles) != 2 {
		t.Fatalf("contents %+v", c)
	}
	found := false
	for _, l := range c.Libraries {
		if strings.HasSuffix(l, "libxenvchan.so.4.17") {
			found = true
		}
	}
	if !found {
		t.Fatalf("libraries %q lack libxenvchan", c.Libraries)
	}
}

func TestCheckFindsWhatIsMissing(t *testing.T) {
	for _, tc := range []struct{ drop, want string }{
		{"libxenvchan.so.4.17", "needs libxenvchan.so.4.17, which is not in the image"},
		{"ld-linux-x86-64.so.2", "its loader /lib64/ld-linux-x86-64.so.2"},
		{"stp.ko", "kernel module /lib/modules/9.9.9/kernel/net/802/stp.ko is missing"},
	} {
		img, m := selfImage(t, tc.drop)
		_, err := Check(bytes.NewReader(img), m)
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("without %s: %v, want an error with %q", tc.drop, err, tc.want)
		}
	}
	img, m := selfImage(t, "")
	m.Files = append(m.Files, File{Image: "usr/share/seabios/vgabios-stdvga.bin", Why: "VGA ROM"})
	m.Modules = append(m.Modules, bootinit.Module{Name: "xen-netfront"})
	_, err := Check(bytes.NewReader(img), m)
	for _, want := range []string{"/usr/share/seabios/vgabios-stdvga.bin (VGA ROM)", "kernel module xen-netfront: not in"} {
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("got %v, want an error with %q", err, want)
		}
	}
}

func TestCheckRefusesForeignInit(t *testing.T) {
	b := &imageBuilder{}
	b.host(t, "/bin/true", "sbin/init")
	b.recs = append(b.recs, cpio.Symlink("init", "sbin/init"))
	b.file("lib/modules/1/modules.dep", nil, 0o644)
	b.recs = append([]cpio.Record{cpio.Directory("lib/modules/1", 0o755)}, b.recs...)
	_, err := Check(bytes.NewReader(b.bytes(t)), Manifest{})
	if err == nil || !strings.Contains(err.Error(), "not the stubdominit command") {
		t.Fatalf("got %v", err)
	}
}

func TestResolve(t *testing.T) {
	b := &imageBuilder{}
	b.file("a/real", []byte("x"), 0o644)
	b.recs = append(b.recs, cpio.Symlink("b", "a"), cpio.Symlink("c", "/b/real"), cpio.Symlink("loop1", "loop2"), cpio.Symlink("loop2", "loop1"))
	img, err := readImage(bytes.NewReader(b.bytes(t)))
	if err != nil {
		t.Fatal(err)
	}
	for in, want := range map[string]string{"a/real": "a/real", "b/real": "a/real", "/c": "a/real"} {
		if got, err := img.resolve(in); err != nil || got != want {
			t.Errorf("resolve(%q) = %q, %v; want %q", in, got, err, want)
		}
	}
	if _, err := img.resolve("loop1"); err == nil || !strings.Contains(err.Error(), "too many") {
		t.Errorf("a symlink loop: %v", err)
	}
	if _, err := img.resolve("a/none"); err == nil {
		t.Error("a missing file resolved")
	}
}

func TestStageModules(t *testing.T) {
	src, dst := t.TempDir(), t.TempDir()
	os.WriteFile(filepath.Join(src, "modules.dep"), []byte("kernel/a.ko: kernel/b.ko\nkernel/b.ko:\nkernel/c.ko:\n"), 0o644)
	os.WriteFile(filepath.Join(src, "modules.builtin"), []byte("kernel/net/d_e.ko\n"), 0o644)
	os.MkdirAll(filepath.Join(src, "kernel"), 0o755)
	for _, m := range []string{"a", "b", "c"} {
		os.WriteFile(filepath.Join(src, "kernel", m+".ko"), []byte(m), 0o644)
	}
	got, err := StageModules(src, dst, []bootinit.Module{{Name: "a"}, {Name: "d-e"}})
	if err != nil {
		t.Fatal(err)
	}
	if strings.Join(got, " ") != "kernel/a.ko kernel/b.ko" {
		t.Fatalf("staged %q", got)
	}
	dep, _ := os.ReadFile(filepath.Join(dst, "modules.dep"))
	bi, _ := os.ReadFile(filepath.Join(dst, "modules.builtin"))
	if string(dep) != "kernel/a.ko: kernel/b.ko\nkernel/b.ko:\n" || string(bi) != "kernel/net/d_e.ko\n" {
		t.Fatalf("modules.dep %q, modules.builtin %q", dep, bi)
	}
	if _, err := os.Stat(filepath.Join(dst, "kernel", "c.ko")); err == nil {
		t.Error("an unneeded module was staged")
	}
	if _, err := StageModules(src, t.TempDir(), []bootinit.Module{{Name: "zz"}}); err == nil || !strings.Contains(err.Error(), "zz") {
		t.Errorf("an unknown module: %v", err)
	}
}

func TestCheckKernelConfig(t *testing.T) {
	frag := "CONFIG_A=y\n# comment\nCONFIG_B=n\nCONFIG_C=\"x y\"\n"
	if err := CheckKernelConfig(strings.NewReader(frag), strings.NewReader("CONFIG_A=y\n# CONFIG_B is not set\nCONFIG_C=\"x y\"\nCONFIG_D=y\n")); err != nil {
		t.Fatal(err)
	}
	err := CheckKernelConfig(strings.NewReader(frag), strings.NewReader("CONFIG_B=y\nCONFIG_C=\"x\"\n"))
	for _, want := range []string{"CONFIG_A is off, want y", "CONFIG_B is y, want it off", `CONFIG_C is "x", want "x y"`} {
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("got %v, want %q", err, want)
		}
	}
	if err := CheckKernelConfig(strings.NewReader("CONFIG_A=y\nCONFIG_A=n\n"), strings.NewReader("")); err == nil {
		t.Error("a fragment setting a symbol twice was accepted")
	}
	if err := CheckKernelConfig(strings.NewReader("A=y\n"), strings.NewReader("")); err == nil {
		t.Error("a line that is not a setting was accepted")
	}
}

// TestBuiltImage checks the image `make stubdom-image` built: the init,
// QEMU and every library it needs, the keymap, the ROMs and the modules,
// and that the kernel's .config has the fragment's settings.
func TestBuiltImage(t *testing.T) {
	p, err := xenvm.DefaultParts()
	if err != nil {
		testenv.Missing(t, "%v", err)
	}
	dir := filepath.Join(filepath.Dir(filepath.Dir(p.Kernel)), "stubdom")
	img := filepath.Join(dir, stubdom.RamdiskName)
	if _, err := os.Stat(img); err != nil {
		testenv.Missing(t, "stubdomain image not built (run `make stubdom-image`): %v", err)
	}
	c, err := CheckFile(img, DefaultManifest())
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{"libxenvchan.so.4.17", "libxendevicemodel.so.1", "libglib-2.0.so.0"} {
		found := false
		for _, l := range c.Libraries {
			found = found || strings.Contains(l, want)
		}
		if !found {
			t.Errorf("the image's programs load no %s: %q", want, c.Libraries)
		}
	}
	fi, _ := os.Stat(img)
	if fi.Size() >= 16<<20 {
		t.Errorf("ramdisk %d bytes, over 16 MiB", fi.Size())
	}
	frag := filepath.Join("..", "kernel.config")
	if err := CheckKernelConfigFiles(frag, filepath.Join(dir, "kernel", "config")); err != nil {
		t.Error(err)
	}
	t.Logf("ramdisk %d bytes, %d MiB unpacked, %d libraries, init %s", fi.Size(), c.UnpackedBytes>>20, len(c.Libraries), c.Init)
}

func TestLoadOrder(t *testing.T) {
	dep := filepath.Join(t.TempDir(), "modules.dep")
	os.WriteFile(dep, []byte("a.ko: b.ko c.ko\nc.ko: b.ko\nb.ko:\nd.ko:\n"), 0o644)
	got, err := LoadOrder(dep)
	if err != nil {
		t.Fatal(err)
	}
	if strings.Join(got, " ") != "b.ko c.ko a.ko d.ko" {
		t.Fatalf("order %q", got)
	}
}

func TestParseModulesDepRefusesBadLine(t *testing.T) {
	if _, err := parseModulesDep(strings.NewReader("a.ko: b.ko\nno colon here\n"), "modules.dep"); err == nil || !strings.Contains(err.Error(), "line 2") {
		t.Errorf("got %v, want an error for line 2", err)
	}
}
