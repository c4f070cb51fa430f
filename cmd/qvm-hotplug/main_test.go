package main

import (
	"bytes"
	"context"
	"debug/elf"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"golang.org/x/sys/unix"

	"github.com/qvm-project/qvm/internal/testenv"
	"github.com/qvm-project/qvm/loopdev"
	"github.com/qvm-project/qvm/xenstore"
	"github.com/qvm-project/qvm/xenstore/xenstoretest"
)

// noDial is the xenstore connection of calls that must fail before they
// reach xenstored.
func noDial(t *testing.T) func(context.Context) (*xenstore.Client, error) {
	return func(context.Context) (*xenstore.Client, error) {
		t.Error("dialed xenstored")
		return nil, errors.New("no xenstored in this test")
	}
}

func TestListLinks(t *testing.T) {
	var out, errOut bytes.Buffer
	if code := run(context.Background(), []string{"qvm-hotplug", "--list-links"}, &errOut, &out, func(string) string { return "" }, noDial(t)); code != 0 {
		t.Fatalf("exit %d: %s", code, errOut.String())
	}
	want := "/etc/xen/scripts/vif-route-qvm\n/etc/xen/scripts/block-qvm\n"
	if out.String() != want {
		t.Errorf("--list-links = %q, want %q", out.String(), want)
	}
}

// TestRefusals: calls libxl never makes are refused with exit code 2 and
// a message naming what is wrong, before xenstored is dialed; the
// failpoint fails the up step only.
func TestRefusals(t *testing.T) {
	for _, c := range []struct {
		argv []string
		env  map[string]string
		code int
		msg  string
	}{
		{[]string{"qvm-hotplug"}, nil, 2, "usage: qvm-hotplug --list-links | SCRIPT"},
		{[]string{"qvm-hotplug", "vif-route"}, nil, 2, `unknown script "vif-route"`},
		{[]string{"vif-route-qvm"}, nil, 2, "vif-route-qvm: error: usage: vif-route-qvm online|add|offline|remove"},
		{[]string{"vif-route-qvm", "online"}, nil, 2, "$vif and $XENBUS_PATH must be set"},
		{[]string{"vif-route-qvm", "up"}, map[string]string{"vif": "vif3.0", "XENBUS_PATH": "/local/domain/0/backend/vif/3/0"}, 2, `"up"`},
		{[]string{"/etc/xen/scripts/vif-route-qvm", "online", "type_if=vif"}, map[string]string{"vif": "vif3.0", "XENBUS_PATH": "/local/domain/0/backend/vif/3/0", "QVM_FAILPOINT": "vif-hotplug"}, 1, "failpoint vif-hotplug"},
		{[]string{"qvm-hotplug", "block-qvm"}, nil, 2, "usage: block-qvm add|remove"},
		{[]string{"block-qvm", "add"}, nil, 2, "$XENBUS_PATH must be set"},
	} {
		var out, errOut bytes.Buffer
		getenv := func(k string) string { return c.env[k] }
		code := run(context.Background(), c.argv, &errOut, &out, getenv, noDial(t))
		if code != c.code || !strings.Contains(errOut.String(), c.msg) {
			t.Errorf("%q %v: exit %d, stderr %q; want exit %d and %q", c.argv, c.env, code, errOut.String(), c.code, c.msg)
		}
	}
}

// TestBinary builds qvm-hotplug as make does and runs it as libxl does,
// through its link in a scripts directory, against the real C xenstored
// and a real loop device: the binary is static (no dynamic loader, no
// shared libraries to map on every device of every start), and block-qvm
// add hands blkback the device and reports it connected.
func TestBinary(t *testing.T) {
	testenv.RequireRoot(t)
	ctx := context.Background()
	dir := t.TempDir()
	bin := filepath.Join(dir, "qvm-hotplug")
	build := exec.Command("go", "build", "-trimpath", "-o", bin, ".")
	build.Env = append(os.Environ(), "CGO_ENABLED=0")
	if out, err := build.CombinedOutput(); err != nil {
		t.Fatalf("go build: %v\n%s", err, out)
	}
	f, err := elf.Open(bin)
	if err != nil {
		t.Fatal(err)
	}
	for _, p := range f.Progs {
		if p.Type == elf.PT_INTERP {
			t.Errorf("%s has a program interpreter: it is not static", bin)
		}
	}
	if libs, _ := f.ImportedLibraries(); len(libs) > 0 {
		t.Errorf("%s needs shared libraries %v", bin, libs)
	}
	f.Close()

	d := xenstoretest.Start(t)
	xs := d.Client()
	img := filepath.Join(dir, "disk.img")
	if err := os.WriteFile(img, make([]byte, 1<<20), 0o600); err != nil {
		t.Fatal(err)
	}
	dev, err := loopdev.Attach(ctx, img, true)
	if err != nil {
		t.Fatal(err)
	}
	defer dev.Close()
	var st unix.Stat_t
	if err := unix.Stat(dev.Path, &st); err != nil {
		t.Fatal(err)
	}
	be := "/local/domain/0/backend/vbd/5/51712"
	if err := xs.WriteString(ctx, be+"/params", dev.Path); err != nil {
		t.Fatal(err)
	}
	link := filepath.Join(dir, "scripts", "block-qvm")
	if err := os.MkdirAll(filepath.Dir(link), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink(bin, link); err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(link, "add")
	cmd.Env = append(d.Env(), "XENBUS_PATH="+be)
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("block-qvm add: %v\n%s", err, out)
	}
	want := map[string]string{
		"physical-device":      fmt.Sprintf("%x:%x", unix.Major(st.Rdev), unix.Minor(st.Rdev)),
		"physical-device-path": dev.Path,
		"hotplug-status":       "connected",
	}
	for k, v := range want {
		if got, err := xs.ReadString(ctx, be+"/"+k); err != nil || got != v {
			t.Errorf("%s = %q, %v; want %q", k, got, err, v)
		}
	}

	// A backend whose params name no block device: refused, exit 1.
	if err := xs.WriteString(ctx, be+"/params", img); err != nil {
		t.Fatal(err)
	}
	cmd = exec.Command(link, "add")
	cmd.Env = append(d.Env(), "XENBUS_PATH="+be)
	out, err := cmd.CombinedOutput()
	var ee *exec.ExitError
	if !errors.As(err, &ee) || ee.ExitCode() != 1 || !strings.Contains(string(out), "is not a block device") {
		t.Errorf("block-qvm add of a plain file: %v\n%s", err, out)
	}
}
