package xenstoretest

import (
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"testing"

	"github.com/qvm-project/qvm/internal/testenv"
)

// FakeXen returns the path of the fake hypervisor library to LD_PRELOAD
// into xenstored. In order it uses: $QVM_FAKEXEN; build/fakexen.so of the
// source tree when it is not older than its source (`make` builds it);
// else it compiles xenstore/testdata/fakexen.c with gcc into the user's
// cache directory, named by the hash of the source, so concurrent test
// processes share one build.
func FakeXen(t testing.TB) string {
	t.Helper()
	p, err := FakeXenPath()
	if err != nil {
		testenv.Missing(t, "fake hypervisor library: %v", err)
	}
	return p
}

// FakeXenPath is FakeXen outside a test.
func FakeXenPath() (string, error) {
	if p := os.Getenv("QVM_FAKEXEN"); p != "" {
		if _, err := os.Stat(p); err != nil {
			return "", fmt.Errorf("QVM_FAKEXEN: %w", err)
		}
		return p, nil
	}
	src, root := sourcePaths()
	srcInfo, err := os.Stat(src)
	if err != nil {
		return "", fmt.Errorf("source %s: %w (set QVM_FAKEXEN to a built fakexen.so)", src, err)
	}
	built := filepath.Join(root, "build", "fakexen.so")
	if fi, err := os.Stat(built); err == nil && !fi.ModTime().Before(srcInfo.ModTime()) {
		return built, nil
	}
	return buildFakeXen(src)
}

// sourcePaths finds fakexen.c and the module root from this file's path.
func sourcePaths() (src, root string) {
	_, file, _, _ := runtime.Caller(0)
	pkg := filepath.Dir(file)                               // .../xenstore/xenstoretest
	src = filepath.Join(pkg, "..", "testdata", "fakexen.c") // .../xenstore/testdata/fakexen.c
	root = filepath.Join(pkg, "..", "..")
	return filepath.Clean(src), filepath.Clean(root)
}

// BuildCommand returns the gcc command line that builds fakexen.c into out.
// The Makefile uses the same flags.
func BuildCommand(src, out string) []string {
	return []string{"gcc", "-O2", "-Wall", "-shared", "-fPIC", "-o", out, src, "-ldl"}
}

func buildFakeXen(src string) (string, error) {
	data, err := os.ReadFile(src)
	if err != nil {
		return "", err
	}
	sum := sha256.Sum256(data)
	cache, err := os.UserCacheDir()
	if err != nil {
		cache = os.TempDir()
	}
	dir := filepath.Join(cache, "qvm-fakexen")
	out := filepath.Join(dir, "fakexen-"+hex.EncodeToString(sum[:8])+".so")
	if _, err := os.Stat(out); err == nil {
		return out, nil
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return "", err
	}
	if _, err := exec.LookPath("gcc"); err != nil {
		return "", fmt.Errorf("gcc not found: %w", err)
	}
	tmp, err := os.CreateTemp(dir, "build-*.so")
	if err != nil {
		return "", err
	}
	tmp.Close()
	defer os.Remove(tmp.Name())
	argv := BuildCommand(src, tmp.Name())
	if b, err := exec.Command(argv[0], argv[1:]...).CombinedOutput(); err != nil {
		return "", fmt.Errorf("%v: %w\n%s(is libxen-dev installed?)", argv, err, b)
	}
	// Rename is atomic: a concurrent build of the same source is harmless.
	if err := os.Rename(tmp.Name(), out); err != nil {
		return "", err
	}
	return out, nil
}
