package lifecycle

import (
	"bytes"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/qvm-project/qvm/internal/testenv"
	"github.com/qvm-project/qvm/loopdev"
)

func TestParseLoopAnswer(t *testing.T) {
	dev, maj, mnr, err := parseLoopAnswer([]byte("/dev/loop12 7:c\n"))
	if err != nil || dev != "/dev/loop12" || maj != 7 || mnr != 12 {
		t.Errorf("parseLoopAnswer = %q %d %d %v", dev, maj, mnr, err)
	}
	for _, bad := range []string{
		"", "/dev/loop1 7:1", "/dev/loop1 7:1\n\n", "/dev/loop1  7:1\n", "/dev/sda 8:0\n", "/dev/loop1 7\n",
		"/dev/loop1 7:1:2\n", "/dev/loop1 g:1\n", "/dev/loop1 1000:1\n", "/dev/loop1 7:100000\n", "/dev/loop1 7:-1\n",
		"\x1b[2J/dev/loop1 7:1\n", "/dev/loop1 7:1\r\n",
	} {
		if dev, _, _, err := parseLoopAnswer([]byte(bad)); err == nil {
			t.Errorf("parseLoopAnswer(%q) took %q", bad, dev)
		}
	}
}

func FuzzParseLoopAnswer(f *testing.F) {
	f.Add([]byte("/dev/loop0 7:0\n"))
	f.Add([]byte("/dev/loop99 103:1f\n"))
	f.Fuzz(func(t *testing.T, b []byte) {
		dev, maj, mnr, err := parseLoopAnswer(b)
		if err != nil {
			return
		}
		if !strings.HasPrefix(dev, "/dev/loop") || maj >= 1<<12 || mnr >= 1<<20 || strings.ContainsAny(dev, " \n:") {
			t.Fatalf("parseLoopAnswer(%q) = %q %d %d", b, dev, maj, mnr)
		}
	})
}

// TestLoopScript runs the script a VM runs for --cdrom=VM:/path with real
// shells and real losetup and stat: util-linux's under /bin/sh and
// busybox's (what the test guest has) under busybox sh. Its answer is
// what serveDisc takes, the device is read-only and backs the file, and
// a missing file is a clear failure.
func TestLoopScript(t *testing.T) {
	testenv.RequireRoot(t)
	bb := testenv.LookPath(t, "busybox")
	bin := t.TempDir()
	for _, applet := range []string{"sh", "losetup", "stat", "test", "["} {
		if err := os.Symlink(bb, filepath.Join(bin, applet)); err != nil {
			t.Fatal(err)
		}
	}
	file := filepath.Join(t.TempDir(), "it's a disc.iso")
	if err := os.WriteFile(file, make([]byte, 1<<20), 0o644); err != nil {
		t.Fatal(err)
	}
	for _, sh := range []struct {
		name string
		argv []string
		env  []string
	}{
		{"util-linux", []string{"/bin/sh", "-c"}, os.Environ()},
		{"busybox", []string{filepath.Join(bin, "sh"), "-c"}, []string{"PATH=" + bin}},
	} {
		t.Run(sh.name, func(t *testing.T) {
			run := func(script string) (string, string, error) {
				cmd := exec.Command(sh.argv[0], append(sh.argv[1:], script)...)
				cmd.Env = sh.env
				var o, e bytes.Buffer
				cmd.Stdout, cmd.Stderr = &o, &e
				err := cmd.Run()
				return o.String(), e.String(), err
			}
			out, errOut, err := run(loopScript(file))
			if err != nil {
				t.Fatalf("loop script: %v\n%s", err, errOut)
			}
			dev, maj, mnr, err := parseLoopAnswer([]byte(out))
			if err != nil {
				t.Fatal(err)
			}
			defer exec.Command("losetup", "-d", dev).Run()
			if f, err := loopdev.BackingFile(dev); err != nil || f != file {
				t.Errorf("%s backs %q, %v; want %s", dev, f, err, file)
			}
			var st []byte
			if st, err = os.ReadFile(filepath.Join("/sys/block", filepath.Base(dev), "ro")); err != nil || strings.TrimSpace(string(st)) != "1" {
				t.Errorf("%s read-only: %q %v, want 1", dev, st, err)
			}
			if want, err := os.ReadFile(filepath.Join("/sys/block", filepath.Base(dev), "dev")); err != nil || strings.TrimSpace(string(want)) != fmt.Sprintf("%d:%d", maj, mnr) {
				t.Errorf("%s is %q (%v), the answer says %d:%d", dev, want, err, maj, mnr)
			}

			_, errOut, err = run(loopScript(file + ".missing"))
			var ee *exec.ExitError
			if !errors.As(err, &ee) || ee.ExitCode() != 2 || !strings.Contains(errOut, "no such file") {
				t.Errorf("missing file: %v, %q; want exit 2 and 'no such file'", err, errOut)
			}
		})
	}
}

// TestReadHandoffDisc reads a handoff with a disc, and refuses a bad one.
func TestReadHandoffDisc(t *testing.T) {
	d := servedDisc{VM: "untrusted", Domid: 4, Dev: "/dev/loop3"}
	h, ok, err := readHandoff(strings.NewReader("domid 7\ndisc " + d.String() + "\nrunning\n"))
	if err != nil || !ok || h.domid != 7 || len(h.discs) != 1 || h.discs[0] != d {
		t.Errorf("readHandoff = %+v %v %v", h, ok, err)
	}
	for _, bad := range []string{"domid 7\ndisc untrusted 4 /dev/sda\nrunning\n", "domid 7\ndisc untrusted x /dev/loop1\nrunning\n", "domid 7\ndisc untrusted 4\nrunning\n"} {
		if h, ok, err := readHandoff(strings.NewReader(bad)); ok || err == nil {
			t.Errorf("readHandoff(%q) = %+v %v %v", bad, h, ok, err)
		}
	}
}
