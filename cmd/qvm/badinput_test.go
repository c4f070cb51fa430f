package main

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// TestBadInputChangesNothing runs each kind of bad input: every one must
// fail with a message naming the problem, exit non-zero, and leave the
// state directory (and any image given) exactly as it was.
func TestBadInputChangesNothing(t *testing.T) {
	e := seedSetup(t)
	src := t.TempDir()
	img := filepath.Join(src, "root.img")
	writeImage(t, img, 1<<20)
	odd := filepath.Join(src, "odd.img")
	writeImage(t, odd, 1000)

	cases := []struct {
		argv []string
		want string
	}{
		{[]string{"qvm-create", "--label", "red", "1bad"}, "invalid VM name"},
		{[]string{"qvm-create", "--label", "red", strings.Repeat("a", 32)}, "at most 31"},
		{[]string{"qvm-create", "--label", "red", "--class", "StandaloneVM", "dom0"}, "reserved"},
		{[]string{"qvm-create", "--label", "red", "--class", "StandaloneVM", "none"}, "reserved"},
		{[]string{"qvm-create", "--label", "red", "--class", "StandaloneVM", "x-dm"}, "device-model"},
		{[]string{"qvm-create", "--label", "red", "--class", "Bogus", "x"}, "unknown class"},
		{[]string{"qvm-create", "--label", "pink", "--class", "StandaloneVM", "x"}, "unknown label"},
		{[]string{"qvm-create", "--class", "StandaloneVM", "x"}, "--label option is mandatory"},
		{[]string{"qvm-create", "--label", "red", "--class", "StandaloneVM", "--property", "foo=1", "x"}, "no such property"},
		{[]string{"qvm-create", "--label", "red", "--class", "StandaloneVM", "--property", "memory", "x"}, "NAME=VALUE"},
		{[]string{"qvm-create", "--label", "red", "--template", "nope", "x"}, "no such VM"},
		{[]string{"qvm-create", "--label", "red", "--template", "sys-firewall", "x"}, "not a TemplateVM"},
		{[]string{"qvm-create", "--label", "red", "--class", "StandaloneVM", "--template", "sys-firewall", "x"}, "not a TemplateVM"},
		{[]string{"qvm-create", "--label", "red", "--class", "StandaloneVM", "my-new-vm"}, "already exists"},
		{[]string{"qvm-create", "--label", "red", "--class", "StandaloneVM", "--property", "memory=abc", "x"}, "not a whole number"},
		{[]string{"qvm-create", "--label", "red", "--class", "StandaloneVM", "--property", "memory=0", "x"}, "out of range"},
		{[]string{"qvm-create", "--label", "red", "--class", "StandaloneVM", "--property", "maxmem=100", "x"}, "less than memory"},
		{[]string{"qvm-create", "--label", "red", "--class", "StandaloneVM", "--property", "vcpus=0", "x"}, "out of range"},
		{[]string{"qvm-create", "--label", "red", "--class", "StandaloneVM", "--property", "mac=zz:16:3e:5e:6c:05", "x"}, "invalid MAC"},
		{[]string{"qvm-create", "--label", "red", "--class", "StandaloneVM", "--property", "ip=10.137.0.999", "x"}, "invalid IPv4"},
		{[]string{"qvm-create", "--label", "red", "--class", "StandaloneVM", "--property", "ip=10.137.0.3", "x"}, "already my-new-vm's address"},
		{[]string{"qvm-create", "--label", "red", "--class", "StandaloneVM", "--property", "qid=9", "x"}, "read-only"},
		{[]string{"qvm-create", "--label", "red", "--class", "StandaloneVM", "--property", "virt_mode=kvm", "x"}, "invalid virt_mode"},
		{[]string{"qvm-create", "--label", "red", "--class", "StandaloneVM", "--property", "netvm=fedora", "x"}, "does not provide network"},
		{[]string{"qvm-create", "--label", "red", "--standalone", "--root-move-from", "/nonexistent/root.img", "x"}, "no such file"},
		{[]string{"qvm-create", "--label", "red", "--standalone", "--root-copy-from", src, "x"}, "not a regular file"},
		{[]string{"qvm-create", "--label", "red", "--standalone", "--root-move-from", odd, "x"}, "512-byte sectors"},
		{[]string{"qvm-create", "--label", "red", "--template", "fedora", "--root-move-from", img, "x"}, "own root volume"},
		{[]string{"qvm-create", "--hvm", "--label", "red", "--mem=0", "--root-move-from", img, "x"}, "out of range"},
		{[]string{"qvm-create", "--label", "red", "--standalone", "--disp", "x"}, "conflicting classes"},
		{[]string{"qvm-create", "--label", "red", "-P", "lvm", "--standalone", "x"}, "unknown pool"},
		{[]string{"qvm-create", "--label", "red", "--standalone"}, "exactly one VMNAME"},
		{[]string{"qvm-create", "--label", "red", "--bogus", "x"}, "unknown flag"},
		{[]string{"qvm-prefs", "nope"}, "no such VM"},
		{[]string{"qvm-prefs", "my-new-vm", "qid", "5"}, "read-only"},
		{[]string{"qvm-prefs", "my-new-vm", "name", "x"}, "read-only"},
		{[]string{"qvm-prefs", "my-new-vm", "uuid", "x"}, "read-only"},
		{[]string{"qvm-prefs", "my-new-vm", "memory", "-5"}, "out of range"},
		{[]string{"qvm-prefs", "my-new-vm", "maxmem", "10"}, "less than memory"},
		{[]string{"qvm-prefs", "my-new-vm", "vcpus", "many"}, "not a whole number"},
		{[]string{"qvm-prefs", "my-new-vm", "mac", "00:16:3e:5e:6c"}, "invalid MAC"},
		{[]string{"qvm-prefs", "my-new-vm", "ip", "10.137.0.2"}, "already sys-firewall's address"},
		{[]string{"qvm-prefs", "my-new-vm", "netvm", "my-new-vm"}, "own netvm"},
		{[]string{"qvm-prefs", "my-new-vm", "bogus", "1"}, "no such property"},
		{[]string{"qvm-prefs", "my-new-vm", "label", "pink"}, "unknown label"},
		{[]string{"qvm-prefs", "-D", "my-new-vm", "label"}, "no default"},
		{[]string{"qvm-prefs", "sys-firewall", "provides_network", "False"}, "use sys-firewall as netvm"},
		{[]string{"qvm-prefs", "sys-firewall", "template", "my-new-vm"}, "not a TemplateVM"},
		{[]string{"qvm-clone", "my-new-vm", "sys-firewall"}, "already exists"},
		{[]string{"qvm-clone", "nope", "x"}, "no such VM"},
		{[]string{"qvm-clone", "my-new-vm", "bad name"}, "invalid VM name"},
		{[]string{"qvm-clone", "dom0", "x"}, "dom0 cannot be cloned"},
		{[]string{"qvm-remove", "fedora"}, "template of sys-firewall"},
		{[]string{"qvm-remove", "sys-firewall"}, "netvm of my-new-vm"},
		{[]string{"qvm-remove", "my-new-vm", "nope"}, "no such VM"},
		{[]string{"qvm-remove", "dom0"}, "dom0 cannot be removed"},
		{[]string{"qubes-prefs", "default_netvm", "fedora"}, "does not provide network"},
		{[]string{"qubes-prefs", "default_template", "my-new-vm"}, "not a TemplateVM"},
		{[]string{"qvm-ls", "--format", "weird"}, "unknown format"},
		{[]string{"qvm-ls", "nope"}, "no such VM"},
	}
	for _, c := range cases {
		before := e.snapshot(src)
		r := e.run(c.argv...)
		if r.code == 0 {
			t.Errorf("%s: succeeded, want failure", strings.Join(c.argv, " "))
		}
		if !strings.Contains(r.stderr, c.want) || !strings.Contains(r.stderr, "error:") {
			t.Errorf("%s: stderr %q, want it to say %q", strings.Join(c.argv, " "), r.stderr, c.want)
		}
		if after := e.snapshot(src); after != before {
			t.Errorf("%s: changed the state:\nbefore:\n%s\nafter:\n%s", strings.Join(c.argv, " "), before, after)
		}
	}
	if _, err := os.Stat(img); err != nil {
		t.Errorf("refused --root-move-from lost the image: %v", err)
	}
}

// TestUsageErrorsExit2 checks argparse-style exit codes: 2 for command-line
// mistakes, 1 for refused operations.
func TestUsageErrorsExit2(t *testing.T) {
	e := seedSetup(t)
	if r := e.run("qvm-create", "--bogus"); r.code != 2 {
		t.Errorf("unknown flag: exit %d", r.code)
	}
	if r := e.run("qvm-prefs", "my-new-vm", "qid", "5"); r.code != 1 {
		t.Errorf("read-only: exit %d", r.code)
	}
	if r := e.run("qvm-create", "--help"); r.code != 0 || !strings.Contains(r.stdout, "--root-move-from") {
		t.Errorf("--help: %+v", r)
	}
}
