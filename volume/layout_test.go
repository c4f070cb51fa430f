package volume

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// TestLayout: per class, which volumes the VM owns and their default sizes.
func TestLayout(t *testing.T) {
	want := map[string]string{
		TemplateVM:   "root:own:saved:10737418240 private:own:saved:2147483648 volatile:own:-:10737418240 kernel:ro",
		StandaloneVM: "root:own:saved:10737418240 private:own:saved:2147483648 volatile:own:-:10737418240 kernel:ro",
		AppVM:        "root:snapshot private:own:saved:2147483648 volatile:own:-:10737418240 kernel:ro",
		DispVM:       "root:snapshot private:snapshot volatile:own:-:12884901888 kernel:ro",
		AdminVM:      "",
	}
	for class, w := range want {
		specs, err := Layout(class)
		if err != nil {
			t.Fatalf("%s: %v", class, err)
		}
		var parts []string
		for _, s := range specs {
			switch {
			case s.Name == Kernel:
				if s.RW || s.OwnImage() {
					t.Errorf("%s kernel: %+v", class, s)
				}
				parts = append(parts, "kernel:ro")
			case s.SnapOnStart:
				if s.SaveOnStop || s.OwnImage() || !s.RW {
					t.Errorf("%s %s: %+v", class, s.Name, s)
				}
				parts = append(parts, s.Name+":snapshot")
			default:
				saved := "-"
				if s.SaveOnStop {
					saved = "saved"
				}
				parts = append(parts, fmt.Sprintf("%s:own:%s:%d", s.Name, saved, s.Size))
			}
		}
		if got := strings.Join(parts, " "); got != w {
			t.Errorf("Layout(%s) = %s\n want %s", class, got, w)
		}
	}
	_, err := Layout("QubesVM")
	wantErrContains(t, err, `unknown VM class "QubesVM"`, AppVM, StandaloneVM)
}

// qubes makes T (TemplateVM), A (AppVM on T), D (DispVM on A) and S
// (StandaloneVM) with their images provisioned under a temporary root.
func qubes(t *testing.T) (tpl, app, disp, sa *VM) {
	t.Helper()
	root := t.TempDir()
	tpl = &VM{Name: "debian-12", Class: TemplateVM, Dir: filepath.Join(root, "debian-12"), Kernel: "6.6.48-1.fc37", KernelsDir: "/var/lib/qubes/vm-kernels"}
	app = &VM{Name: "work", Class: AppVM, Dir: filepath.Join(root, "work"), Kernel: tpl.Kernel, KernelsDir: tpl.KernelsDir, Template: tpl}
	disp = &VM{Name: "disp12", Class: DispVM, Dir: filepath.Join(root, "disp12"), Template: app}
	sa = &VM{Name: "win10", Class: StandaloneVM, Dir: filepath.Join(root, "win10")}
	for _, vm := range []*VM{tpl, app, disp, sa} {
		if err := Provision(context.Background(), vm.Dir, vm.Class, nil); err != nil {
			t.Fatal(err)
		}
	}
	return
}

// TestDescribe: qvm-volume info's fields for each kind of volume.
func TestDescribe(t *testing.T) {
	tpl, app, disp, sa := qubes(t)
	// Some data in the template's root, and a grown private for the AppVM.
	if err := Resize(ImagePath(app.Dir, Private), 5*GiB); err != nil {
		t.Fatal(err)
	}
	cases := []struct {
		vm     *VM
		volume string
		want   string
	}{
		{tpl, Root, "pool=varlibqubes vid=vm-templates/debian-12/root rw=True source= save_on_stop=True snap_on_start=False size=10737418240 usage=0 revisions_to_keep=0 ephemeral=False is_outdated=False"},
		{tpl, Private, "pool=varlibqubes vid=vm-templates/debian-12/private rw=True source= save_on_stop=True snap_on_start=False size=2147483648 usage=0 revisions_to_keep=0 ephemeral=False is_outdated=False"},
		{app, Root, "pool=varlibqubes vid=appvms/work/root rw=True source=vm-templates/debian-12/root save_on_stop=False snap_on_start=True size=10737418240 usage=0 revisions_to_keep=0 ephemeral=False is_outdated=False"},
		{app, Private, "pool=varlibqubes vid=appvms/work/private rw=True source= save_on_stop=True snap_on_start=False size=5368709120 usage=0 revisions_to_keep=0 ephemeral=False is_outdated=False"},
		{app, Volatile, "pool=varlibqubes vid=appvms/work/volatile rw=True source= save_on_stop=False snap_on_start=False size=10737418240 usage=0 revisions_to_keep=0 ephemeral=False is_outdated=False"},
		{app, Kernel, "pool=linux-kernel vid=6.6.48-1.fc37 rw=False source= save_on_stop=False snap_on_start=False size=0 usage=0 revisions_to_keep=0 ephemeral=False is_outdated=False"},
		{disp, Root, "pool=varlibqubes vid=appvms/disp12/root rw=True source=vm-templates/debian-12/root save_on_stop=False snap_on_start=True size=10737418240 usage=0 revisions_to_keep=0 ephemeral=False is_outdated=False"},
		{disp, Private, "pool=varlibqubes vid=appvms/disp12/private rw=True source=appvms/work/private save_on_stop=False snap_on_start=True size=5368709120 usage=0 revisions_to_keep=0 ephemeral=False is_outdated=False"},
		{disp, Volatile, "pool=varlibqubes vid=appvms/disp12/volatile rw=True source= save_on_stop=False snap_on_start=False size=12884901888 usage=0 revisions_to_keep=0 ephemeral=False is_outdated=False"},
		{sa, Root, "pool=varlibqubes vid=appvms/win10/root rw=True source= save_on_stop=True snap_on_start=False size=10737418240 usage=0 revisions_to_keep=0 ephemeral=False is_outdated=False"},
	}
	for _, c := range cases {
		in, err := Describe(*c.vm, c.volume)
		if err != nil {
			t.Errorf("%s:%s: %v", c.vm.Name, c.volume, err)
			continue
		}
		var parts []string
		for _, kv := range in.Fields() {
			parts = append(parts, kv[0]+"="+kv[1])
		}
		if got := strings.Join(parts, " "); got != c.want {
			t.Errorf("%s:%s\n got  %s\n want %s", c.vm.Name, c.volume, got, c.want)
		}
	}

	// Usage follows the data; Path names the image the VM sees.
	f, err := os.OpenFile(ImagePath(sa.Dir, Root), os.O_WRONLY, 0)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := f.WriteAt(bytes.Repeat([]byte{0xa5}, int(MiB)), 3*GiB); err != nil {
		t.Fatal(err)
	}
	f.Sync()
	f.Close()
	in, _ := Describe(*sa, Root)
	if in.Usage < MiB || in.Usage > MiB+64*KiB || in.Size != DefaultRootSize {
		t.Errorf("root with 1 MiB written: size %d usage %d", in.Size, in.Usage)
	}
	in, _ = Describe(*app, Root)
	if in.Path != ImagePath(tpl.Dir, Root) {
		t.Errorf("AppVM root path %s, want the template's image", in.Path)
	}
	in, _ = Describe(*app, Kernel)
	if in.Path != "/var/lib/qubes/vm-kernels/6.6.48-1.fc37/modules.img" {
		t.Errorf("kernel path %s", in.Path)
	}
	if v, err := in.Property("rw"); v != "False" || err != nil {
		t.Errorf("Property(rw) = %q, %v", v, err)
	}
	if _, err := in.Property("colour"); err == nil || !strings.Contains(err.Error(), "no such property: colour") {
		t.Errorf("Property(colour): %v", err)
	}
	if f := (Info{RevisionsToKeep: -1}).Fields(); f[8] != [2]string{"revisions_to_keep", "-1 (snapshot disabled)"} {
		t.Errorf("revisions_to_keep -1 shows as %v", f[8])
	}
}

// TestDescribeErrors: unknown volumes, missing images, orphan snapshots.
func TestDescribeErrors(t *testing.T) {
	_, app, _, sa := qubes(t)
	_, err := Describe(*sa, "swap")
	wantErrContains(t, err, "win10:swap", `no volume "swap"`, "root, private, volatile, kernel")
	_, err = Describe(VM{Name: "dom0", Class: AdminVM}, Root)
	wantErrContains(t, err, "has no volumes")

	orphan := *app
	orphan.Template = nil
	_, err = Describe(orphan, Root)
	wantErrContains(t, err, "has no template")

	broken := *sa
	broken.Dir = filepath.Join(t.TempDir(), "gone")
	_, err = Describe(broken, Private)
	wantErrContains(t, err, "win10:private", "storage is damaged")
	// A volatile image may be absent: it is remade at start.
	in, err := Describe(broken, Volatile)
	if err != nil || in.Size != DefaultVolatileSize || in.Usage != 0 {
		t.Errorf("absent volatile: %+v, %v", in, err)
	}
}

// TestDescribeAll lists every volume in disk order.
func TestDescribeAll(t *testing.T) {
	_, app, _, _ := qubes(t)
	infos, err := DescribeAll(*app)
	if err != nil {
		t.Fatal(err)
	}
	var got []string
	for _, in := range infos {
		got = append(got, in.Pool+":"+in.VID+"="+in.Name)
	}
	want := "[varlibqubes:appvms/work/root=root varlibqubes:appvms/work/private=private varlibqubes:appvms/work/volatile=volatile linux-kernel:6.6.48-1.fc37=kernel]"
	if fmt.Sprint(got) != want {
		t.Errorf("DescribeAll = %v\n want %s", got, want)
	}
	if infos, err := DescribeAll(VM{Name: "dom0", Class: AdminVM}); err != nil || len(infos) != 0 {
		t.Errorf("dom0: %v, %v", infos, err)
	}
}

// TestResizeVolume applies qvm-volume resize's rules before growing.
func TestResizeVolume(t *testing.T) {
	tpl, app, _, sa := qubes(t)
	if err := ResizeVolume(*sa, Root, 20*GiB); err != nil {
		t.Fatal(err)
	}
	if in, _ := Describe(*sa, Root); in.Size != 20*GiB || in.Usage != 0 {
		t.Errorf("win10:root after resize: size %d usage %d", in.Size, in.Usage)
	}
	wantErrContains(t, ResizeVolume(*sa, Root, 10*GiB), "win10:root", "refusing to shrink")
	wantErrContains(t, ResizeVolume(*app, Root, 20*GiB), "work:root", "snapshot of debian-12's root",
		"qvm-volume resize debian-12:root SIZE")
	wantErrContains(t, ResizeVolume(*app, Kernel, 20*GiB), "work:kernel", "read-only")
	wantErrContains(t, ResizeVolume(*app, "swap", 20*GiB), `no volume "swap"`)
	if in, _ := Describe(*tpl, Root); in.Size != DefaultRootSize {
		t.Errorf("template root changed to %d", in.Size)
	}
	if err := ResizeVolume(*app, Private, 4*GiB); err != nil {
		t.Error(err)
	}
}
