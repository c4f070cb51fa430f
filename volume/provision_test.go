package volume

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"testing"
)

// images lists the image files in dir with their sizes and allocation.
func images(t *testing.T, dir string) string {
	t.Helper()
	var s string
	for _, n := range dirNames(t, dir) {
		u, err := Stat(filepath.Join(dir, n))
		if err != nil {
			t.Fatal(err)
		}
		s += fmt.Sprintf("%s=%d/%d ", n, u.Size, u.Allocated)
	}
	return s
}

// TestProvisionNew: a new VM of each class gets its own images, sparse, at
// the default sizes, in a 0700 directory; snapshots get no file.
func TestProvisionNew(t *testing.T) {
	want := map[string]string{
		TemplateVM:   "private.img=2147483648/0 root.img=10737418240/0 volatile.img=10737418240/0 ",
		StandaloneVM: "private.img=2147483648/0 root.img=10737418240/0 volatile.img=10737418240/0 ",
		AppVM:        "private.img=2147483648/0 volatile.img=10737418240/0 ",
		DispVM:       "volatile.img=12884901888/0 ",
	}
	for class, w := range want {
		dir := filepath.Join(t.TempDir(), "vm")
		if err := Provision(context.Background(), dir, class, nil); err != nil {
			t.Fatalf("%s: %v", class, err)
		}
		if got := images(t, dir); got != w {
			t.Errorf("%s: %s, want %s", class, got, w)
		}
		if st, _ := os.Stat(dir); st.Mode().Perm() != 0o700 {
			t.Errorf("%s: directory mode %v", class, st.Mode().Perm())
		}
	}
}

// TestProvisionClone: a clone copies the saved images (identical, holes
// kept) and starts with an empty volatile; a StandaloneVM made from a
// template copies the template's root and private.
func TestProvisionClone(t *testing.T) {
	root := t.TempDir()
	src := filepath.Join(root, "my-new-vm")
	if err := Provision(context.Background(), src, StandaloneVM, nil); err != nil {
		t.Fatal(err)
	}
	for _, name := range []string{Root, Private, Volatile} {
		p := ImagePath(src, name)
		os.Remove(p)
		writeSparse(t, p, 64*MiB, []extent{{MiB, MiB}, {40 * MiB, 3 * MiB}})
	}
	sources, err := CloneSources(StandaloneVM, src)
	if err != nil {
		t.Fatal(err)
	}
	if len(sources) != 2 || sources[Root].Path != ImagePath(src, Root) || sources[Private].Path != ImagePath(src, Private) {
		t.Fatalf("CloneSources(StandaloneVM) = %v", sources)
	}
	dst := filepath.Join(root, "my-new-vm-copy")
	if err := Provision(context.Background(), dst, StandaloneVM, sources); err != nil {
		t.Fatal(err)
	}
	assertSameImage(t, ImagePath(src, Root), ImagePath(dst, Root))
	assertSameImage(t, ImagePath(src, Private), ImagePath(dst, Private))
	if u, _ := Stat(ImagePath(dst, Volatile)); u.Size != DefaultVolatileSize || u.Allocated != 0 {
		t.Errorf("clone's volatile %+v, want a fresh empty one", u)
	}

	app, err := CloneSources(AppVM, src)
	if err != nil || len(app) != 1 || app[Private].Path == "" {
		t.Errorf("CloneSources(AppVM) = %v, %v; want private only", app, err)
	}
	if d, _ := CloneSources(DispVM, src); len(d) != 0 {
		t.Errorf("CloneSources(DispVM) = %v, want none", d)
	}
}

// TestProvisionImport: an imported root image is placed (linked for a
// move, copied otherwise; the others are created) and keeps its size.
func TestProvisionImport(t *testing.T) {
	root := t.TempDir()
	img := filepath.Join(root, "win10-root.img")
	writeSparse(t, img, 64*MiB, []extent{{0, MiB}})
	ref := filepath.Join(root, "ref.img")
	if _, err := Copy(context.Background(), img, ref); err != nil {
		t.Fatal(err)
	}
	for _, move := range []bool{false, true} {
		dir := filepath.Join(root, fmt.Sprintf("vm-move-%v", move))
		im, err := OpenImport(img, move)
		if err != nil {
			t.Fatal(err)
		}
		err = Provision(context.Background(), dir, StandaloneVM, map[string]Source{Root: {Kind: Imported, Import: im}})
		im.Close()
		if err != nil {
			t.Fatal(err)
		}
		assertSameImage(t, ref, ImagePath(dir, Root))
		if _, err := os.Stat(img); err != nil {
			t.Errorf("move %v: Provision dropped the user's image (only FinishMove may): %v", move, err)
		}
		if got := images(t, dir); got != "private.img=2147483648/0 root.img=67108864/1048576 volatile.img=10737418240/0 " {
			t.Errorf("move %v: VM images: %s", move, got)
		}
	}
}

// TestProvisionAllOrNothing: every refusal or failure leaves no directory,
// no image, and user files where they were.
func TestProvisionAllOrNothing(t *testing.T) {
	root := t.TempDir()
	img := filepath.Join(root, "win10-root.img")
	writeSparse(t, img, 8*MiB, []extent{{0, MiB}})
	imMove, err := OpenImport(img, true)
	if err != nil {
		t.Fatal(err)
	}
	defer imMove.Close()
	cancelled, cancel := context.WithCancel(context.Background())
	cancel()
	cases := []struct {
		name    string
		ctx     context.Context
		class   string
		sources map[string]Source
		parts   []string
	}{
		{"root for an AppVM", context.Background(), AppVM, map[string]Source{Root: {Kind: Imported, Import: imMove}},
			[]string{"AppVM has no root image of its own", StandaloneVM}},
		{"no import", context.Background(), StandaloneVM, map[string]Source{Root: {Kind: Imported}},
			[]string{"image to import is missing"}},
		{"missing clone source, with a move", context.Background(), StandaloneVM, map[string]Source{
			Root: {Kind: Imported, Import: imMove}, Private: {Path: filepath.Join(root, "nope.img")}},
			[]string{"nope.img"}},
		{"cancelled", cancelled, StandaloneVM, map[string]Source{Root: {Kind: Imported, Import: imMove}},
			[]string{"context canceled"}},
		{"unknown class", context.Background(), "HVM", nil, []string{"unknown VM class"}},
	}
	for _, c := range cases {
		dir := filepath.Join(root, "vm")
		err := Provision(c.ctx, dir, c.class, c.sources)
		wantErrContains(t, err, c.parts...)
		if _, err := os.Stat(dir); !errors.Is(err, os.ErrNotExist) {
			t.Errorf("%s: left %s behind: %s", c.name, dir, images(t, dir))
		}
		if _, err := os.Stat(img); err != nil {
			t.Errorf("%s: lost the user's image: %v", c.name, err)
		}
	}

	// In an existing directory, only what Provision made is removed.
	dir := filepath.Join(root, "existing")
	if err := os.Mkdir(dir, 0o700); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "notes"), []byte("x"), 0o600); err != nil {
		t.Fatal(err)
	}
	err = Provision(context.Background(), dir, StandaloneVM, map[string]Source{Private: {Path: filepath.Join(root, "nope.img")}})
	wantErrContains(t, err, "nope.img")
	if got := fmt.Sprint(dirNames(t, dir)); got != "[notes]" {
		t.Errorf("existing directory after a failed provision: %s", got)
	}
}
