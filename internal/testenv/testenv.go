// Package testenv decides what a test does when a real part it needs
// (root, a daemon binary, a kernel feature) is missing on this machine.
//
// Under `make test` (and so in CI) QVM_TEST_STRICT=1 is set: a missing part
// is then a test failure, never a silent skip, because the Makefile installs
// everything the tests need. Outside it (a developer's quick `go test`), the
// test is skipped with the reason.
package testenv

import (
	"os"
	"os/exec"
	"testing"
)

// Strict reports whether missing prerequisites must fail tests.
func Strict() bool { return os.Getenv("QVM_TEST_STRICT") == "1" }

// Missing fails (strict) or skips (otherwise) the test with the reason.
func Missing(t testing.TB, format string, args ...any) {
	t.Helper()
	if Strict() {
		t.Fatalf("prerequisite missing (run `make deps` or `make test`): "+format, args...)
	}
	t.Skipf("prerequisite missing: "+format, args...)
}

// RequireRoot needs uid 0 (namespaces, loop devices, mounts).
func RequireRoot(t testing.TB) {
	t.Helper()
	if os.Geteuid() != 0 {
		Missing(t, "test needs root")
	}
}

// RequireFile needs an existing file, such as a daemon binary at a fixed path.
func RequireFile(t testing.TB, path string) {
	t.Helper()
	if _, err := os.Stat(path); err != nil {
		Missing(t, "%s: %v", path, err)
	}
}

// LookPath needs a command on $PATH and returns its full path.
func LookPath(t testing.TB, name string) string {
	t.Helper()
	p, err := exec.LookPath(name)
	if err != nil {
		Missing(t, "command %q not found on PATH", name)
	}
	return p
}
