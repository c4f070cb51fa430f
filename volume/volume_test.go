package volume

import (
	"errors"
	"os"
	"path/filepath"
	"testing"
)

// TestCreateSparse: a new image has its size and no blocks; an existing
// file is never replaced; bad sizes are refused without a file.
func TestCreateSparse(t *testing.T) {
	dir := t.TempDir()
	p := ImagePath(dir, Root)
	if filepath.Base(p) != "root.img" {
		t.Fatalf("ImagePath = %s", p)
	}
	if err := Create(p, DefaultRootSize); err != nil {
		t.Fatal(err)
	}
	u, err := Stat(p)
	if err != nil {
		t.Fatal(err)
	}
	if u.Size != DefaultRootSize || u.Allocated != 0 {
		t.Errorf("new image %+v, want %d bytes with none allocated", u, DefaultRootSize)
	}
	if st, _ := os.Stat(p); st.Mode().Perm() != imageMode {
		t.Errorf("mode %v, want %v", st.Mode().Perm(), os.FileMode(imageMode))
	}
	if len(dataMap(t, p)) != 0 {
		t.Errorf("new image has data extents %v", dataMap(t, p))
	}

	err = Create(p, GiB)
	if !errors.Is(err, os.ErrExist) {
		t.Errorf("create over an existing image: %v, want ErrExist", err)
	}
	if u2, _ := Stat(p); u2.Size != DefaultRootSize {
		t.Errorf("existing image resized to %d", u2.Size)
	}
	for _, size := range []int64{0, -512, 1000} {
		q := filepath.Join(dir, "bad.img")
		if err := Create(q, size); err == nil {
			t.Errorf("Create(size %d) accepted", size)
		}
		if _, err := os.Stat(q); !errors.Is(err, os.ErrNotExist) {
			t.Errorf("Create(size %d) left a file", size)
		}
	}
	wantErrContains(t, Create(filepath.Join(dir, "odd.img"), 1000), "512-byte sectors", "use 512 or 1024")
}

// TestResize: growing is sparse (no new blocks, data kept); shrinking and
// partial sectors are refused and change nothing; the same size is a no-op.
func TestResize(t *testing.T) {
	dir := t.TempDir()
	p := filepath.Join(dir, "private.img")
	writeSparse(t, p, 64*MiB, []extent{{0, MiB}, {63 * MiB, MiB}})
	sum := fileSum(t, p)
	before, _ := Stat(p)

	if err := Resize(p, 20*GiB); err != nil {
		t.Fatal(err)
	}
	after, _ := Stat(p)
	if after.Size != 20*GiB || after.Allocated != before.Allocated {
		t.Errorf("after growing: %+v, before %+v: want 20 GiB and the same allocation", after, before)
	}
	if m := dataMap(t, p); len(m) != 2 || m[1] != (extent{63 * MiB, MiB}) {
		t.Errorf("data map after growing: %v", m)
	}
	if err := Resize(p, 20*GiB); err != nil {
		t.Errorf("resize to the same size: %v", err)
	}

	err := Resize(p, 10*GiB)
	wantErrContains(t, err, "refusing to shrink", "lose the data", p)
	if u, _ := Stat(p); u.Size != 20*GiB {
		t.Errorf("a refused shrink changed the size to %d", u.Size)
	}
	wantErrContains(t, Resize(p, 20*GiB+100), "512-byte sectors")
	if u, _ := Stat(p); u.Size != 20*GiB {
		t.Errorf("a refused resize changed the size to %d", u.Size)
	}
	if err := Resize(filepath.Join(dir, "none.img"), GiB); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("resize of a missing image: %v", err)
	}
	wantErrContains(t, Resize(dir, GiB), "not a regular file")

	// The original data is intact after growing (the first 64 MiB hash the same).
	if err := os.Truncate(p, 64*MiB); err != nil { // only to compare; Resize never shrinks
		t.Fatal(err)
	}
	if fileSum(t, p) != sum {
		t.Errorf("data changed by growing")
	}
}
