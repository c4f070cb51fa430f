package guestdisk

import (
	"bytes"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/qvm-project/qvm/internal/testenv"
)

// The spellings systemd 252 gives $attr{} values (TestUdevDoesNotProbeGuestDisks
// checks some of them against the real udevd).
func TestMarkPathSpellsNamesAsUdev(t *testing.T) {
	for name, want := range map[string]string{
		"/var/lib/qvm/appvms/work/private.img": "/var/lib/qvm/appvms/work/private.img",
		"/home/u/My Disc (1).iso":              "/home/u/My Disc _1_.iso",
		"/a/tab\there":                         "/a/tab here",
		"/a/vt\vff\f":                          "/a/vt ff ", // \v and \f are not trimmed, then become spaces
		"/a/trailing  \t":                      "/a/trailing",
		"/a/#+-.:=@_ $%?,":                     "/a/#+-.:=@_ $%?,",
		`/a/\x41 \y`:                           `/a/\x41 _y`,
		"/a/é 日本 😀":                            "/a/é 日本 😀",
		"/a/\xff\xc3\xe9":                      "/a/___",
		"/a/\xef\xbf\xbe\xef\xb7\x90":          "/a/______", // U+FFFE, U+FDD0
		"/a/\xed\xa0\x80":                      "/a/___",    // a UTF-16 surrogate
		"/a/\xc0\xaf":                          "/a/__",     // overlong '/'
		"/a/\xf8\x88\x80\x80\x80":              "/a/_____",  // five bytes
		"/a/\"'*[]|&;<>`!~^{}":                 "/a/" + strings.Repeat("_", 16),
		"/a/x (deleted)":                       "/a/x _deleted_",
	} {
		got, err := MarkPath(name)
		if err != nil || got != MarkDir+want {
			t.Errorf("MarkPath(%q) = %q, %v; want %q", name, got, err, MarkDir+want)
		}
	}
	for _, bad := range []string{"", "relative/x", "/a//b", "/a/./b", "/a/", "/" + strings.Repeat("x", maxName)} {
		if got, err := MarkPath(bad); err == nil {
			t.Errorf("MarkPath(%q) = %q, want an error", bad, got)
		}
	}
	if _, err := MarkPath("/" + strings.Repeat("x", maxName-1)); err != nil {
		t.Errorf("a %d-byte name: %v", maxName, err)
	}
}

func FuzzMarkPath(f *testing.F) {
	for _, s := range []string{"/var/lib/qvm/appvms/work/private.img", "/a/\xff\xc3\xe9 \t", `/\x`, "/é"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, name string) {
		p, err := MarkPath(name)
		if err != nil {
			return
		}
		rest, ok := strings.CutPrefix(p, MarkDir+"/")
		if !ok {
			t.Fatalf("MarkPath(%q) = %q, not under %s", name, p, MarkDir)
		}
		// udev replaces bytes one for one and only drops trailing space.
		if len(rest) != len(strings.TrimRight(name, " \t\n\r"))-1 {
			t.Fatalf("MarkPath(%q) = %q: length changed", name, p)
		}
		if strings.ContainsFunc(rest, func(r rune) bool { return r < ' ' || r == 0x7f }) {
			t.Fatalf("MarkPath(%q) = %q: control characters", name, p)
		}
		if strings.Count(rest, "/") != strings.Count(strings.TrimRight(name, " \t\n\r"), "/")-1 {
			t.Fatalf("MarkPath(%q) = %q: slashes changed", name, p)
		}
	})
}

// Mark leaves the mark of the name the kernel has for the open file, here
// reached through a symbolic link, and makes room for marks below marks.
func TestMarkMarksTheKernelsName(t *testing.T) {
	testenv.RequireRoot(t)
	dir := t.TempDir()
	t.Cleanup(func() { os.RemoveAll(MarkDir + filepath.Dir(dir)) })
	real := filepath.Join(dir, "real", "disc (1).iso")
	if err := os.MkdirAll(filepath.Dir(real), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(real, []byte("x"), 0o644); err != nil {
		t.Fatal(err)
	}
	link := filepath.Join(dir, "link")
	if err := os.Symlink(filepath.Join(dir, "real"), link); err != nil {
		t.Fatal(err)
	}
	mark := func(p string) {
		t.Helper()
		f, err := os.Open(p)
		if err != nil {
			t.Fatal(err)
		}
		defer f.Close()
		if err := Mark(f); err != nil {
			t.Fatal(err)
		}
	}
	mark(filepath.Join(link, "disc (1).iso"))
	fi, err := os.Stat(MarkDir + filepath.Join(dir, "real", "disc _1_.iso"))
	if err != nil || !fi.Mode().IsRegular() {
		t.Fatalf("mark of %s: %v, %v", real, fi, err)
	}
	if _, err := os.Lstat(MarkDir + link); err == nil {
		t.Errorf("the link's name was marked, not the kernel's")
	}
	// Marked again: fine. A file below a marked name: the mark becomes a
	// directory, which TEST still finds.
	mark(real)
	sub := filepath.Join(dir, "sub")
	if err := os.WriteFile(sub, []byte("x"), 0o644); err != nil {
		t.Fatal(err)
	}
	mark(sub)
	if err := os.Remove(sub); err != nil {
		t.Fatal(err)
	}
	if err := os.MkdirAll(sub, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(sub, "x.img"), []byte("x"), 0o644); err != nil {
		t.Fatal(err)
	}
	mark(filepath.Join(sub, "x.img"))
	for _, p := range []string{sub, filepath.Join(sub, "x.img")} {
		if _, err := os.Stat(MarkDir + p); err != nil {
			t.Errorf("mark of %s: %v", p, err)
		}
	}
	// A name ending in whitespace only: udev tests a directory.
	blank := filepath.Join(dir, " ")
	if err := os.WriteFile(blank, []byte("x"), 0o644); err != nil {
		t.Fatal(err)
	}
	mark(blank)
	if fi, err := os.Stat(MarkDir + dir + "/"); err != nil || !fi.IsDir() {
		t.Errorf("mark of %q: %v, %v", blank, fi, err)
	}
}

func TestUdevRulesNameTheStateDirectories(t *testing.T) {
	r, err := UdevRules("/var/lib/qvm", "/srv/qvm state")
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Contains(r, []byte(`ATTRS{loop/backing_file}=="/var/lib/qvm/*|/srv/qvm state/*", GOTO="qvm_guest_disk"`)) {
		t.Errorf("rules:\n%s", r)
	}
	if bytes.Contains(r, []byte("@QVM_")) {
		t.Errorf("placeholder left:\n%s", r)
	}
	for _, bad := range [][]string{nil, {"var/lib/qvm"}, {"/"}, {"/var/lib/qvm/"}, {"/a|b"}, {"/a*"}, {`/a"b`}, {"/a\nb"}} {
		if _, err := UdevRules(bad...); err == nil {
			t.Errorf("UdevRules(%q): no error", bad)
		}
	}
}
