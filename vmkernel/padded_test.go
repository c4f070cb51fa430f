package vmkernel

import (
	"bytes"
	"context"
	"os"
	"path/filepath"
	"testing"
	"time"
)

func TestPadded(t *testing.T) {
	ctx := context.Background()
	dir := t.TempDir()
	f := filepath.Join(dir, "initramfs")
	data := bytes.Repeat([]byte("initramfs"), 100) // 900 bytes
	os.WriteFile(f, data, 0o644)
	p, err := Padded(ctx, f)
	if err != nil {
		t.Fatal(err)
	}
	b, _ := os.ReadFile(p)
	if len(b) != 1024 || !bytes.Equal(b[:900], data) || !bytes.Equal(b[900:], make([]byte, 124)) {
		t.Fatalf("padded copy: %d bytes", len(b))
	}
	// Made once: the same copy again.
	st1, _ := os.Stat(p)
	if p2, err := Padded(ctx, f); err != nil || p2 != p {
		t.Fatalf("second call: %s %v", p2, err)
	}
	if st2, _ := os.Stat(p); !os.SameFile(st1, st2) {
		t.Error("the copy was made again for an unchanged file")
	}
	// A new version of the file gets a new copy.
	data = bytes.Repeat([]byte("x"), 1024)
	os.WriteFile(f, data, 0o644)
	os.Chtimes(f, time.Now().Add(time.Hour), time.Now().Add(time.Hour))
	if _, err := Padded(ctx, f); err != nil {
		t.Fatal(err)
	}
	if b, _ := os.ReadFile(p); !bytes.Equal(b, data) {
		t.Errorf("copy of the new version: %d bytes, want the 1024 bytes as they are", len(b))
	}
	if left, _ := filepath.Glob(filepath.Join(dir, ".*")); len(left) != 0 {
		t.Errorf("temporary files left: %v", left)
	}
	if _, err := Padded(ctx, filepath.Join(dir, "missing")); err == nil {
		t.Error("a missing file: no error")
	}
}
