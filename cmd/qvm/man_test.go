package main

import (
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/qvm-project/qvm/internal/testenv"
)

// render formats a page with groff as man does, failing on any warning.
func render(t *testing.T, page string) string {
	t.Helper()
	groff := testenv.LookPath(t, "groff")
	cmd := exec.Command(groff, "-man", "-Tutf8", "-ww", "-rLL=200n")
	cmd.Stdin = strings.NewReader(page)
	var stderr strings.Builder
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil || stderr.Len() > 0 {
		t.Fatalf("groff: %v\n%s\n%s", err, stderr.String(), page)
	}
	// Drop groff's overstrike bold and underline.
	var b strings.Builder
	rs := []rune(string(out))
	for i := 0; i < len(rs); i++ {
		if i+1 < len(rs) && rs[i+1] == '\b' {
			i++
			continue
		}
		b.WriteRune(rs[i])
	}
	return b.String()
}

// TestManPages: every command's page is made from its own flags: each
// visible option (and each action's) is on it, groff takes it without a
// warning, and man reads the installed file.
func TestManPages(t *testing.T) {
	ctx := context.Background()
	for _, v := range verbs() {
		if v.hidden {
			continue
		}
		var b strings.Builder
		if err := writeMan(ctx, &b, v.linkName()); err != nil {
			t.Fatal(err)
		}
		text := render(t, b.String())
		if !strings.Contains(text, v.linkName()+" - ") {
			t.Errorf("%s: no NAME line:\n%s", v.linkName(), text)
		}
		d := describe(ctx, v)
		if d == nil {
			if v.name != "dhcpd" {
				t.Errorf("%s: no description", v.name)
			}
			continue
		}
		all := []*description{d}
		for _, a := range d.actions {
			all = append(all, a.desc)
			if !strings.Contains(text, strings.Join(a.names, ", ")) {
				t.Errorf("%s: action %v missing", v.linkName(), a.names)
			}
		}
		for _, dd := range all {
			for _, f := range dd.flags() {
				if !strings.Contains(text, flagNames(f)) {
					t.Errorf("%s: option %s missing:\n%s", v.linkName(), flagNames(f), text)
				}
			}
		}
	}
	var b strings.Builder
	if err := writeMan(ctx, &b, "qvm"); err != nil {
		t.Fatal(err)
	}
	if text := render(t, b.String()); !strings.Contains(text, "qvm-create(1)") || !strings.Contains(text, "qubes-prefs(1)") {
		t.Errorf("qvm(1):\n%s", text)
	}
	if r := newEnv(t).run("qvm", "--man", "frob"); r.code != 2 || !strings.Contains(r.stderr, `no verb "frob"`) {
		t.Errorf("--man frob: %+v", r)
	}
}

// TestMakeInstallCLIDocs runs the Makefile's part of make install that
// writes the completion and the man pages, and reads them back as bash
// and man would.
func TestMakeInstallCLIDocs(t *testing.T) {
	testenv.LookPath(t, "make")
	manCmd := testenv.LookPath(t, "man")
	dest := t.TempDir()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	out, err := exec.CommandContext(ctx, "make", "-s", "-C", "../..", "install-cli-docs", "DESTDIR="+dest, "CLI_QVM="+qvmBin).CombinedOutput()
	if err != nil {
		t.Fatalf("make install-cli-docs: %v\n%s", err, out)
	}
	comp := filepath.Join(dest, "usr/share/bash-completion/completions")
	man1 := filepath.Join(dest, "usr/local/share/man/man1")
	for _, v := range verbs() {
		if v.hidden {
			continue
		}
		if l, err := os.Readlink(filepath.Join(comp, v.linkName())); err != nil || l != "qvm" {
			t.Errorf("completion of %s: %q %v", v.linkName(), l, err)
		}
		page := filepath.Join(man1, v.linkName()+".1")
		cmd := exec.CommandContext(ctx, manCmd, "-l", page)
		cmd.Env = append(os.Environ(), "MANPAGER=cat", "MANWIDTH=100")
		text, err := cmd.CombinedOutput()
		if err != nil || !strings.Contains(string(text), "NAME") || !strings.Contains(string(text), v.linkName()) {
			t.Errorf("man -l %s: %v\n%s", page, err, text)
		}
	}
	script, err := os.ReadFile(filepath.Join(comp, "qvm"))
	if err != nil || !strings.Contains(string(script), "complete -F _qvm qvm qvm-create") {
		t.Errorf("completion script: %v\n%s", err, script)
	}
	if _, err := os.Stat(filepath.Join(man1, "qvm.1")); err != nil {
		t.Error(err)
	}
}
