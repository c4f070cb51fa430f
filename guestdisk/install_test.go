package guestdisk_test

import (
	"bytes"
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/qvm-project/qvm/guestdisk"
	"github.com/qvm-project/qvm/internal/testenv"
)

// `make install` (its install-guest-disks part) puts the rules UdevRules
// makes, for the state directories given, where udevd reads them under
// PREFIX, and the LVM configuration beside qvm's other shared files; it
// refuses directories that would break the rule's pattern.
func TestMakeInstallInstallsTheRules(t *testing.T) {
	testenv.LookPath(t, "make")
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	dest := t.TempDir()
	make := func(args ...string) ([]byte, error) {
		cmd := exec.CommandContext(ctx, "make", append([]string{"-s", "-C", "..", "install-guest-disks", "DESTDIR=" + dest}, args...)...)
		// Not the settings of a `make test` this runs under.
		for _, e := range os.Environ() {
			if k, _, _ := strings.Cut(e, "="); k != "MAKEFLAGS" && k != "MFLAGS" && k != "MAKELEVEL" {
				cmd.Env = append(cmd.Env, e)
			}
		}
		return cmd.CombinedOutput()
	}
	for _, c := range []struct {
		prefix string
		dirs   []string
		arg    string
	}{
		{"/usr/local", []string{"/var/lib/qvm"}, ""},
		{"/usr", []string{"/var/lib/qvm", "/srv/qvm"}, "/var/lib/qvm /srv/qvm"},
	} {
		args := []string{"PREFIX=" + c.prefix}
		if c.arg != "" {
			args = append(args, "QVM_STATE_DIRS="+c.arg)
		}
		if out, err := make(args...); err != nil {
			t.Fatalf("make install-guest-disks %v: %v\n%s", args, err, out)
		}
		want, err := guestdisk.UdevRules(c.dirs...)
		if err != nil {
			t.Fatal(err)
		}
		rules := filepath.Join(dest, c.prefix, "lib/udev/rules.d", guestdisk.RulesFile)
		got, err := os.ReadFile(rules)
		if err != nil || !bytes.Equal(got, want) {
			t.Errorf("%s (%v): %v\n%s\nwant\n%s", rules, args, err, got, want)
		}
		if fi, err := os.Stat(rules); err != nil || fi.Mode().Perm() != 0o644 {
			t.Errorf("%s: %v, %v", rules, fi, err)
		}
		lvm, err := os.ReadFile(filepath.Join(dest, c.prefix, "share/qvm/lvm-guest-disks.conf"))
		if err != nil || string(lvm) != guestdisk.LVMConfig() {
			t.Errorf("LVM configuration under %s: %v", c.prefix, err)
		}
	}
	for _, bad := range []string{"", "var/lib/qvm", "/", "/var/lib/qvm/", "/a*", "/a|b", "/a#b"} {
		if out, err := make("QVM_STATE_DIRS=" + bad); err == nil {
			t.Errorf("QVM_STATE_DIRS=%q installed:\n%s", bad, out)
		}
	}
}
