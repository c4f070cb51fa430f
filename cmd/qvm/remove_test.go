package main

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"golang.org/x/sys/unix"
)

// terminal opens a pseudo-terminal whose input is answer: the slave end
// is the command's stdin (a real terminal, as term.IsTerminal sees it).
func terminal(t *testing.T, answer string) *os.File {
	t.Helper()
	m, err := os.OpenFile("/dev/ptmx", os.O_RDWR|unix.O_NOCTTY, 0)
	if err != nil {
		t.Fatalf("open a pseudo-terminal: %v", err)
	}
	t.Cleanup(func() { m.Close() })
	if err := unix.IoctlSetPointerInt(int(m.Fd()), unix.TIOCSPTLCK, 0); err != nil {
		t.Fatal(err)
	}
	n, err := unix.IoctlGetInt(int(m.Fd()), unix.TIOCGPTN)
	if err != nil {
		t.Fatal(err)
	}
	s, err := os.OpenFile(fmt.Sprintf("/dev/pts/%d", n), os.O_RDWR|unix.O_NOCTTY, 0)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	if _, err := m.WriteString(answer); err != nil {
		t.Fatal(err)
	}
	return s
}

// TestRemoveAsks: qvm-remove lists the VMs and asks, as Qubes; only y
// (or Y) removes; anything else cancels, changing nothing; with no
// terminal it refuses unless -f.
func TestRemoveAsks(t *testing.T) {
	e := seedSetup(t)
	e.ok("qvm-create", "--class", "StandaloneVM", "-l", "red", "work")
	e.ok("qvm-create", "--class", "StandaloneVM", "-l", "red", "work2")
	dir := filepath.Join(e.dir, "appvms", "work")
	for _, answer := range []string{"n\n", "\n", "yes\n", " y\n", ""} {
		before := e.snapshot()
		r := e.runWith(terminal(t, answer+"\x04"), "qvm-remove", "work")
		wantOut := "  work\nAre you sure? [y/N] "
		if answer == "" {
			wantOut += "\n"
		}
		if r.code != 1 || r.stdout != wantOut ||
			r.stderr != "This will completely remove the selected VM(s)...\nRemove cancelled.\n" {
			t.Errorf("answer %q: %+v", answer, r)
		}
		if e.snapshot() != before {
			t.Errorf("answer %q changed the state", answer)
		}
	}
	// `echo y | qvm-remove work`: no terminal, nobody confirmed.
	for _, argv := range [][]string{{"qvm-remove", "work"}, {"qvm-remove", "--all"}} {
		before := e.snapshot()
		r := e.runWith(strings.NewReader("y\n"), argv...)
		want := "qvm-remove: error: remove cancelled: standard input is not a terminal, so nobody can confirm; add -f (--force) to remove without asking\n"
		if argv[1] == "--all" {
			want = "WARNING!!! Removing all domains may leave your system in an unrecoverable state!\n" + want
		}
		if r.code != 1 || r.stdout != "" || r.stderr != want {
			t.Errorf("%v without a terminal: %+v", argv, r)
		}
		if e.snapshot() != before {
			t.Errorf("%v without a terminal changed the state", argv)
		}
	}
	r := e.runWith(terminal(t, "Y\n"), "qvm-remove", "work", "work2")
	if r.code != 0 || r.stdout != "  work\n  work2\nAre you sure? [y/N] " || r.stderr != "This will completely remove the selected VM(s)...\n" {
		t.Errorf("answer Y: %+v", r)
	}
	if _, err := os.Stat(dir); !os.IsNotExist(err) {
		t.Errorf("work's images after yes: %v", err)
	}
	e.ok("qvm-create", "--class", "StandaloneVM", "-l", "red", "work")
	if out := e.ok("qvm-remove", "-f", "work"); out != "" {
		t.Errorf("-f printed %q", out)
	}
	e.ok("qvm-create", "--class", "StandaloneVM", "-l", "red", "work")
	e.ok("qvm-remove", "--force", "work")

	// --all asks once more, for the magic words.
	before := e.snapshot()
	r = e.runWith(terminal(t, "y\n"), "qvm-remove", "--all")
	if r.code != 1 || r.stdout != "Are you certain? [N/IKNOWWHATIAMDOING]" ||
		r.stderr != "WARNING!!! Removing all domains may leave your system in an unrecoverable state!\nRemove cancelled.\n" {
		t.Errorf("--all answered y: %+v", r)
	}
	if e.snapshot() != before {
		t.Errorf("--all answered y changed the state")
	}
	// A VM in use is named with its users, in Qubes' words.
	r = e.run("qvm-remove", "-f", "sys-firewall")
	if r.code != 1 || r.stderr != "VM sys-firewall cannot be removed. It is in use as:\n - netvm for my-new-vm\n"+
		"qvm-remove: error: sys-firewall is in use: netvm of my-new-vm; change those first\n" {
		t.Errorf("remove of a netvm in use: %+v", r)
	}
	e.ok("qubes-prefs", "default_template", "fedora")
	r = e.run("qvm-remove", "-f", "fedora")
	if r.code != 1 || !strings.HasPrefix(r.stderr, "VM fedora cannot be removed. It is in use as:\n - global property default_template\n - template for sys-firewall\n") {
		t.Errorf("remove of the default template: %+v", r)
	}
	// Removing a VM and its users together works in any order.
	e.ok("qubes-prefs", "-D", "default_template")
	e.ok("qvm-remove", "-f", "fedora", "sys-firewall", "my-new-vm")
	if out := e.ok("qvm-ls", "--raw-list"); out != "dom0\n" {
		t.Errorf("left: %q", out)
	}
	if r := e.run("qvm-remove", "-f", "dom0"); r.code != 1 || r.stderr != "Domain 'dom0' cannot be removed.\n" {
		t.Errorf("remove dom0: %+v", r)
	}
}

// TestRemoveAllWithTheMagicWords: --all removes every VM but dom0 once
// IKNOWWHATIAMDOING is typed (and then y).
func TestRemoveAllWithTheMagicWords(t *testing.T) {
	e := seedSetup(t)
	r := e.runWith(terminal(t, "y\n"), "qvm-remove", "--all", "--exclude", "dom0")
	// --exclude skips the magic words, as in Qubes.
	if r.code != 0 || r.stdout != "  fedora\n  my-new-vm\n  sys-firewall\nAre you sure? [y/N] " {
		t.Errorf("--all --exclude: %+v", r)
	}
	if out := e.ok("qvm-ls", "--raw-list"); out != "dom0\n" {
		t.Errorf("left: %q", out)
	}
	e = seedSetup(t)
	tty := terminal(t, "IKNOWWHATIAMDOING\ny\n")
	r = e.runWith(tty, "qvm-remove", "--all")
	if r.code != 0 || r.stdout != "Are you certain? [N/IKNOWWHATIAMDOING]  fedora\n  my-new-vm\n  sys-firewall\nAre you sure? [y/N] " {
		t.Errorf("--all: %+v", r)
	}
	if out := e.ok("qvm-ls", "--raw-list"); out != "dom0\n" {
		t.Errorf("left: %q", out)
	}
}
