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
		{[]string{"qvm-create", "--label", "red", "--standalone"}, "VMNAME is mandatory"},
		{[]string{"qvm-create", "--label", "red", "--standalone", "x", "y"}, "unrecognized arguments: y"},
		{[]string{"qvm-create", "--label", "red", "--bogus", "x"}, "unknown flag"},
		{[]string{"qvm-prefs", "nope"}, "no such domain: 'nope'"},
		{[]string{"qvm-prefs", "my-new-vm", "qid", "5"}, "read-only"},
		{[]string{"qvm-prefs", "my-new-vm", "name", "x"}, "read-only"},
		{[]string{"qvm-prefs", "my-new-vm", "uuid", "x"}, "read-only"},
		{[]string{"qvm-prefs", "my-new-vm", "memory", "-5"}, "out of range"},
		{[]string{"qvm-prefs", "my-new-vm", "maxmem", "10"}, "less than memory"},
		{[]string{"qvm-prefs", "my-new-vm", "vcpus", "many"}, "not a whole number"},
		{[]string{"qvm-prefs", "my-new-vm", "mac", "00:16:3e:5e:6c"}, "invalid MAC"},
		{[]string{"qvm-prefs", "my-new-vm", "ip", "10.137.0.2"}, "already sys-firewall's address"},
		{[]string{"qvm-prefs", "my-new-vm", "netvm", "my-new-vm"}, "own netvm"},
		{[]string{"qvm-prefs", "my-new-vm", "bogus", "1"}, "no such property: 'bogus'"},
		{[]string{"qvm-prefs", "my-new-vm", "label", "pink"}, "unknown label"},
		{[]string{"qvm-prefs", "-D", "my-new-vm", "label"}, "no default"},
		{[]string{"qvm-prefs", "sys-firewall", "provides_network", "False"}, "use sys-firewall as netvm"},
		{[]string{"qvm-prefs", "sys-firewall", "template", "my-new-vm"}, "not a TemplateVM"},
		{[]string{"qvm-sendkey", "my-new-vm"}, "give a VM name and the keys"},
		{[]string{"qvm-sendkey", "my-new-vm", "ctrl-alt-dle"}, `no key "dle"`},
		{[]string{"qvm-sendkey", "--hold-time", "-1", "my-new-vm", "ret"}, "0 to 10000"},
		{[]string{"qvm-sendkey", "nope", "ret"}, "no such domain: 'nope'"},
		{[]string{"qvm-sendkey", "my-new-vm", "ret"}, "my-new-vm is not running: qvm-start my-new-vm first"},
		{[]string{"qvm-sendkey", "sys-firewall", "ret"}, "sys-firewall is not an HVM"},
		{[]string{"qvm-sendkey", "dom0", "ret"}, "dom0 is not an HVM"},
		{[]string{"qvm-console", "my-new-vm"}, "my-new-vm is not running: qvm-start my-new-vm first"},
		{[]string{"qvm-console", "dom0"}, "dom0 has no VM console"},
		{[]string{"qvm-console", "nope"}, "no such domain: 'nope'"},
		{[]string{"qvm-console"}, "give one VM name"},
		{[]string{"qvm-console", "my-new-vm", "fedora"}, "give one VM name"},
		{[]string{"qvm-console", "--filter-escape-chars", "--no-filter-escape-chars", "my-new-vm"}, "not allowed with"},
		{[]string{"qvm-clone", "my-new-vm", "sys-firewall"}, "already exists"},
		{[]string{"qvm-clone", "nope", "x"}, "no such domain: 'nope'"},
		{[]string{"qvm-clone", "my-new-vm", "bad name"}, "invalid VM name"},
		{[]string{"qvm-clone", "dom0", "x"}, "dom0 cannot be cloned"},
		{[]string{"qvm-remove", "-f", "fedora"}, "template for sys-firewall"},
		{[]string{"qvm-remove", "-f", "sys-firewall"}, " - netvm for my-new-vm\n"},
		{[]string{"qvm-remove", "-f", "my-new-vm", "nope"}, "no such domain: 'nope'"},
		{[]string{"qvm-remove", "my-new-vm"}, "not a terminal"},
		{[]string{"qvm-remove", "--exclude", "fedora", "my-new-vm"}, "--exclude can only be used with --all"},
		{[]string{"qvm-remove"}, "one of the arguments --all VMNAME is required"},
		{[]string{"qvm-remove", "-f", "dom0"}, "Domain 'dom0' cannot be removed."},
		{[]string{"qubes-prefs", "default_netvm", "fedora"}, "does not provide network"},
		{[]string{"qubes-prefs", "default_template", "my-new-vm"}, "not a TemplateVM"},
		{[]string{"qvm-ls", "--format", "weird"}, "invalid choice: 'weird'"},
		{[]string{"qvm-ls", "-n", "--format", "full"}, "not allowed with argument"},
		{[]string{"qvm-ls", "--internal", "maybe"}, "invalid choice: 'maybe'"},
		{[]string{"qvm-ls", "--features", "x"}, "Invalid argument: --features x"},
		{[]string{"qvm-ls", "--prefs", "=1"}, "Invalid argument: --prefs =1"},
		{[]string{"qvm-ls", "--net"}, "ambiguous option: --net could match --netvm-is, --network"},
		{[]string{"qvm-ls", "--class"}, "expected at least one argument"},
		{[]string{"qvm-prefs", "my-new-vm", "bogus"}, "no such property: 'bogus'"},
		{[]string{"qvm-prefs", "*"}, "matches 4 VMs"},
		{[]string{"qubes-prefs", "bogus"}, "no such property: 'bogus'"},
		{[]string{"qubes-prefs", "default_pool", "lvm"}, "qvm has one pool"},
		{[]string{"qubes-prefs", "default_qrexec_timeout", "0"}, "out of range"},
		{[]string{"qvm-features", "--unset", "my-new-vm"}, "--unset requires a feature"},
		{[]string{"qvm-features", "--unset", "my-new-vm", "ipv6", "1"}, "cannot both set and unset a value"},
		{[]string{"qvm-service", "my-new-vm", "cups", "maybe"}, "Invalid literal for boolean value: 'maybe'"},
		{[]string{"qvm-service", "-D", "my-new-vm", "cups", "on"}, "cannot both set and unset a value"},
		{[]string{"qvm-tags", "my-new-vm", "add", "bad tag"}, "disallowed characters"},
		{[]string{"qvm-tags", "my-new-vm", "frob", "x"}, "invalid choice: 'frob'"},
		{[]string{"qvm-tags", "my-new-vm", "del"}, "exactly one tag"},
		{[]string{"qvm-tags", "nope", "add", "x"}, "no such domain: 'nope'"},
		{[]string{"qvm-volume", "info", "my-new-vm"}, "expected a vm & volume combination like foo:bar"},
		{[]string{"qvm-volume", "config", "my-new-vm:root", "rw", "False"}, "cannot be changed"},
		{[]string{"qvm-volume", "config", "my-new-vm:root", "size", "1"}, "Invalid property: size"},
		{[]string{"qvm-volume", "revert", "my-new-vm:root"}, "No snapshots available"},
		{[]string{"qvm-volume", "import", "my-new-vm:root", "-"}, "specify it explicitly with --size"},
		{[]string{"qvm-volume", "import", "--size", "x", "my-new-vm:root", "-"}, "invalid int value: 'x'"},
		{[]string{"qvm-volume", "import", "sys-firewall:root", src + "/root.img"}, "save_on_stop=False volume sys-firewall:root"},
		{[]string{"qvm-volume", "import", "my-new-vm:root", src}, "is a directory"},
		{[]string{"qvm-volume", "resize", "-f", "my-new-vm:root", "1GiB"}, "never shrinks"},
		{[]string{"qvm-volume", "clear", "my-new-vm:root"}, "not a terminal"},
		{[]string{"qvm-volume", "clone", "my-new-vm:root", "sys-firewall:root"}, "Volumes must be save_on_stop for cloning"},
		{[]string{"qvm-pause", "my-new-vm"}, "not the dom0 of a running Xen"},
		{[]string{"qvm-pause"}, "one of the arguments --all VMNAME is required"},
		{[]string{"qvm-run"}, "give a VM name and a command"},
		{[]string{"qvm-run", "my-new-vm"}, "give the command to run"},
		{[]string{"qvm-run", "nope", "ls"}, "no such domain"},
		{[]string{"qvm-run", "dom0", "ls"}, "cannot run commands in dom0"},
		{[]string{"qvm-run", "--dispvm", "my-new-vm", "ls"}, "disposable"},
		{[]string{"qvm-run", "-u", "bad user", "my-new-vm", "ls"}, "user name"},
		{[]string{"qvm-run", "--service", "my-new-vm", "../etc"}, "service"},
		{[]string{"qvm-run", "-a", "-n", "my-new-vm", "ls"}, "not allowed with"},
		{[]string{"qvm-run", "my-new-vm", "ls"}, "not the dom0 of a running Xen"},
		{[]string{"qvm-run", "--localcmd", "cat", "my-new-vm", "ls"}, "--localcmd have no effect without --pass-io"},
		{[]string{"qvm-run", "-p", "--all", "ls"}, "--passio cannot be used when more than 1 qube"},
		{[]string{"qvm-unpause", "nope"}, "no such domain: 'nope'"},
		{[]string{"qvm-check", "--running", "my-new-vm"}, "not the dom0 of a running Xen"},
		{[]string{"qvm-check", "--all", "my-new-vm"}, "not allowed with argument --all"},
		{[]string{"qvm-kill", "my-new-vm"}, "not the dom0 of a running Xen"},
		{[]string{"qvm-shutdown", "--timeout", "soon", "my-new-vm"}, "argument --timeout"},
		{[]string{"qvm-start", "--hddisk", "dom0:/x.img", "my-new-vm"}, "CD-ROM only"},
		{[]string{"qvm-start", "--drive", "hd:dom0:/x.img", "my-new-vm"}, "CD-ROM only"},
		{[]string{"qvm-start", "--cdrom", "dom0:/x.iso", "--drive", "dom0:/y.iso", "my-new-vm"}, "not allowed with argument"},
		{[]string{"qvm-pci", "assign", "my-new-vm", "dom0:00_00.0"}, "--required"},
		{[]string{"qvm-pci", "info", "dom0:ff_1f.7"}, "doesn't expose pci device 'ff_1f.7'"},
		{[]string{"qvm-block", "assign", "my-new-vm", "dom0:/x.iso"}, "CD-ROM drive only"},
		{[]string{"qvm-create", "-l", "red"}, "VMNAME is mandatory"},
		{[]string{"qvm-create", "-l", "red", "-p", "root", "x"}, "Pool argument must be of form"},
		{[]string{"qvm-clone", "-P", "file", "-p", "root=file", "my-new-vm", "x"}, "not allowed with argument"},
		{[]string{"qvm-ls", "nope"}, "no such domain: 'nope'"},
	}
	for _, c := range cases {
		before := e.snapshot(src)
		r := e.run(c.argv...)
		if r.code == 0 {
			t.Errorf("%s: succeeded, want failure", strings.Join(c.argv, " "))
		}
		if !strings.Contains(r.stderr, c.want) || !strings.Contains(r.stderr, "error:") && !strings.HasPrefix(c.want, "Domain ") {
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

// TestDamagedStoreActsOnNothing: a store naming a VM "../../victim" makes
// every command refuse (qvm-remove deleted outside the state directory
// before definitions were checked at load), and says how to recover.
func TestDamagedStoreActsOnNothing(t *testing.T) {
	e := newEnv(t)
	e.ok("qvm-create", "--class", "StandaloneVM", "-l", "red", "victim")
	victim := filepath.Join(filepath.Dir(e.dir), "victim")
	if err := os.MkdirAll(victim, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(victim, "data"), []byte("keep"), 0o644); err != nil {
		t.Fatal(err)
	}
	doc, err := os.ReadFile(filepath.Join(e.dir, "qvm.json"))
	if err != nil {
		t.Fatal(err)
	}
	bad := strings.Replace(string(doc), `"name": "victim"`, `"name": "../../victim"`, 1)
	if err := os.WriteFile(filepath.Join(e.dir, "qvm.json"), []byte(bad), 0o644); err != nil {
		t.Fatal(err)
	}
	for _, argv := range [][]string{{"qvm-remove", "-f", "../../victim"}, {"qvm-ls"}, {"qvm-prefs", "../../victim"}} {
		r := e.run(argv...)
		if r.code == 0 || !strings.Contains(r.stderr, "is corrupt") || !strings.Contains(r.stderr, "invalid VM name") {
			t.Errorf("%s on a damaged store: %+v", strings.Join(argv, " "), r)
		}
	}
	if b, err := os.ReadFile(filepath.Join(victim, "data")); err != nil || string(b) != "keep" {
		t.Errorf("outside the state directory: %q, %v", b, err)
	}
}
