package volume

import (
	"bytes"
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestImportData(t *testing.T) {
	ctx := context.Background()
	dir := t.TempDir()
	if err := Provision(ctx, dir, StandaloneVM, nil); err != nil {
		t.Fatal(err)
	}
	vm := VM{Name: "sa", Class: StandaloneVM, Dir: dir}
	root := ImagePath(dir, Root)
	data := append(append([]byte("boot"), make([]byte, 4*MiB)...), []byte("tail")...)
	if err := ImportData(ctx, vm, Root, bytes.NewReader(data), 8*MiB); err != nil {
		t.Fatal(err)
	}
	got, err := os.ReadFile(root)
	if err != nil {
		t.Fatal(err)
	}
	if int64(len(got)) != 8*MiB || !bytes.Equal(got[:len(data)], data) || !bytes.Equal(got[len(data):], make([]byte, 8*MiB-int64(len(data)))) {
		t.Errorf("root after import: %d bytes", len(got))
	}
	if u, err := Stat(root); err != nil || u.Allocated > 1*MiB {
		t.Errorf("the zeros were written: %+v %v", u, err)
	}
	before, _ := os.ReadFile(root)
	for _, c := range []struct {
		name string
		vm   VM
		vol  string
		src  []byte
		size int64
		want string
	}{
		{"too big", vm, Root, data, 4 * MiB, "larger than the 4194304 bytes"},
		{"odd size", vm, Root, data, 1000, "whole number of 512-byte sectors"},
		{"volatile", vm, Volatile, data, 8 * MiB, "cannot import into save_on_stop=False volume sa:volatile"},
		{"snapshot", VM{Name: "app", Class: AppVM, Dir: dir}, Root, data, 8 * MiB, "snapshot of its template's volume"},
		{"kernel", vm, Kernel, data, 8 * MiB, "save_on_stop=False volume sa:kernel"},
		{"no volume", vm, "swap", data, 8 * MiB, `no volume "swap"`},
	} {
		err := ImportData(ctx, c.vm, c.vol, bytes.NewReader(c.src), c.size)
		if err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%s: %v, want %q", c.name, err, c.want)
		}
	}
	cancelled, cancel := context.WithCancel(ctx)
	cancel()
	if err := ImportData(cancelled, vm, Root, bytes.NewReader(data), 8*MiB); err == nil {
		t.Errorf("cancelled import succeeded")
	}
	if after, _ := os.ReadFile(root); !bytes.Equal(after, before) {
		t.Errorf("a refused import changed the image")
	}
	ents, _ := os.ReadDir(dir)
	var names []string
	for _, e := range ents {
		names = append(names, e.Name())
	}
	if strings.Join(names, " ") != "private.img root.img volatile.img" {
		t.Errorf("files left: %v", names)
	}
	// The private volume of an AppVM is its own: it takes an import.
	app := t.TempDir()
	if err := Provision(ctx, app, AppVM, nil); err != nil {
		t.Fatal(err)
	}
	if err := ImportData(ctx, VM{Name: "app", Class: AppVM, Dir: app}, Private, strings.NewReader("home"), 512); err != nil {
		t.Fatal(err)
	}
	if b, _ := os.ReadFile(filepath.Join(app, "private.img")); len(b) != 512 || string(b[:4]) != "home" {
		t.Errorf("private after import: %q", b[:8])
	}
}
