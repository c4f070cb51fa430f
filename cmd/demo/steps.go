package main

import (
	"context"
	"crypto/sha256"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"time"

	"github.com/qvm-project/qvm/e2e/xenvm"
	model "github.com/qvm-project/qvm/vm"
)

// step is one thing the demo shows: commands to run and what to check.
type step struct {
	title string
	cmds  [][]string
	// check, if set, says what is wrong after the commands ran ("" = ok).
	check func(d *demo) string
}

// demo runs steps in dom0 and keeps what they printed.
type demo struct {
	ctx  context.Context
	w    io.Writer
	last string // output of the last command
}

func (d *demo) run(argv ...string) (string, error) {
	fmt.Fprintf(d.w, "$ %s\n", shellQuote(argv))
	start := time.Now()
	cmd := exec.CommandContext(d.ctx, argv[0], argv[1:]...)
	out, err := cmd.CombinedOutput()
	d.last = string(out)
	d.w.Write(out)
	if err != nil {
		fmt.Fprintf(d.w, "  (exit: %v, %.1f s)\n", err, time.Since(start).Seconds())
	} else if el := time.Since(start); el > 2*time.Second {
		fmt.Fprintf(d.w, "  (%.1f s)\n", el.Seconds())
	}
	return string(out), err
}

// runFrom runs argv with file as its standard input (the shell's
// "argv < file").
func (d *demo) runFrom(file string, argv ...string) error {
	fmt.Fprintf(d.w, "$ %s < %s\n", shellQuote(argv), file)
	start := time.Now()
	f, err := os.Open(file)
	if err != nil {
		return err
	}
	defer f.Close()
	cmd := exec.CommandContext(d.ctx, argv[0], argv[1:]...)
	out := &strings.Builder{}
	cmd.Stdin, cmd.Stdout, cmd.Stderr = f, out, out
	err = cmd.Run()
	d.last = out.String()
	d.w.Write([]byte(d.last))
	if err != nil {
		return fmt.Errorf("%s: %v", shellQuote(argv), err)
	}
	fmt.Fprintf(d.w, "  (%.1f s)\n", time.Since(start).Seconds())
	return nil
}

// runTo runs argv with its standard output into file (the shell's
// "argv > file": dom0 in the bed has no shell) and returns the file's
// SHA-256, read back from the file.
func (d *demo) runTo(file string, argv ...string) (string, error) {
	fmt.Fprintf(d.w, "$ %s > %s\n", shellQuote(argv), file)
	start := time.Now()
	if err := os.MkdirAll(filepath.Dir(file), 0o755); err != nil {
		return "", err
	}
	f, err := os.Create(file)
	if err != nil {
		return "", err
	}
	defer f.Close()
	cmd := exec.CommandContext(d.ctx, argv[0], argv[1:]...)
	var errOut strings.Builder
	cmd.Stdout, cmd.Stderr = f, &errOut
	if err := cmd.Run(); err != nil {
		return "", fmt.Errorf("%s: %v\n%s", shellQuote(argv), err, errOut.String())
	}
	if err := f.Sync(); err != nil {
		return "", err
	}
	b, err := os.ReadFile(file)
	if err != nil {
		return "", err
	}
	fmt.Fprintf(d.w, "  (%d bytes, %.1f s)\n", len(b), time.Since(start).Seconds())
	return fmt.Sprintf("%x", sha256.Sum256(b)), nil
}

func (d *demo) pref(vm, prop string) string {
	out, _ := exec.CommandContext(d.ctx, "qvm-prefs", vm, prop).Output()
	return strings.TrimSpace(string(out))
}

// guestSays waits for "guestinit: PREFIX" on a VM's console and returns
// the rest of the line.
func (d *demo) guestSays(vm, prefix string) (string, error) {
	path := filepath.Join("/var/log/xen/console", "guest-"+vm+".log")
	want := "guestinit: " + prefix
	deadline := time.Now().Add(4 * time.Minute)
	for time.Now().Before(deadline) {
		b, _ := os.ReadFile(path)
		for _, line := range strings.Split(string(b), "\n") {
			if i := strings.Index(line, want); i >= 0 {
				return strings.TrimRight(line[i+len(want):], "\r"), nil
			}
		}
		select {
		case <-d.ctx.Done():
			return "", d.ctx.Err()
		case <-time.After(500 * time.Millisecond):
		}
	}
	return "", fmt.Errorf("%s printed no %q on its console", vm, want)
}

// consoleSays waits until qvm-console --log VM shows a line with want
// (the VM's console log, which qvm keeps) and prints that line.
func consoleSays(vm, want string) func(d *demo) string {
	return func(d *demo) string {
		deadline := time.Now().Add(4 * time.Minute)
		for time.Now().Before(deadline) {
			out, _ := exec.CommandContext(d.ctx, "qvm-console", "--log", vm).Output()
			for _, line := range strings.Split(string(out), "\n") {
				if strings.Contains(line, want) {
					fmt.Fprintf(d.w, "  qvm-console --log %s: %s\n", vm, strings.TrimRight(line, "\r"))
					return ""
				}
			}
			select {
			case <-d.ctx.Done():
				return d.ctx.Err().Error()
			case <-time.After(time.Second):
			}
		}
		return fmt.Sprintf("qvm-console --log %s shows no %q", vm, want)
	}
}

// guestNetwork shows what a guest read from its keys (and, if asked, got
// by DHCP) and checks it against what qvm-ls -n shows.
func guestNetwork(vm string, dhcp bool) func(d *demo) string {
	return func(d *demo) string {
		ip, gw := d.pref(vm, "visible_ip"), d.pref(vm, "visible_gateway")
		want := map[string]string{"qubes-ip=": ip, "qubes-gateway=": gw, "qubes-netmask=": "255.255.255.255",
			"qubes-primary-dns=": "10.139.1.1", "qubes-secondary-dns=": "10.139.1.2"}
		for _, k := range []string{"qubes-ip=", "qubes-gateway=", "qubes-netmask=", "qubes-primary-dns=", "qubes-secondary-dns="} {
			got, err := d.guestSays(vm, "key "+k)
			if err != nil {
				return err.Error()
			}
			fmt.Fprintf(d.w, "  %s's guest read %s%s\n", vm, k, got)
			if got != want[k] {
				return fmt.Sprintf("%s's guest read %s%s, qvm says %s", vm, k, got, want[k])
			}
		}
		got, err := d.guestSays(vm, "overwrite qubes-ip: ")
		if err != nil {
			return err.Error()
		}
		fmt.Fprintf(d.w, "  %s's guest trying to overwrite its qubes-ip: %s\n", vm, got)
		if !strings.HasPrefix(got, "EACCES") {
			return vm + "'s guest could change its own settings"
		}
		if dhcp {
			got, err := d.guestSays(vm, "dhcp ")
			if err != nil {
				return err.Error()
			}
			fmt.Fprintf(d.w, "  %s's guest asked DHCP like an agent-less OS and got: %s\n", vm, got)
			w := fmt.Sprintf("ip=%s netmask=255.255.255.255 router=%s dns=10.139.1.1,10.139.1.2", ip, gw)
			if !strings.HasPrefix(got, w) {
				return fmt.Sprintf("DHCP gave %q, want %q", got, w)
			}
		}
		return ""
	}
}

func lsShows(vm, state string) func(d *demo) string {
	return func(d *demo) string {
		for _, line := range strings.Split(d.last, "\n") {
			f := strings.Fields(line)
			if len(f) >= 2 && f[0] == vm {
				if f[1] != state {
					return fmt.Sprintf("qvm-ls shows %s %s, want %s", vm, f[1], state)
				}
				return ""
			}
		}
		if state == "" {
			return ""
		}
		return "qvm-ls does not list " + vm
	}
}

func all(checks ...func(d *demo) string) func(d *demo) string {
	return func(d *demo) string {
		for _, c := range checks {
			if msg := c(d); msg != "" {
				return msg
			}
		}
		return ""
	}
}

// demoSteps are the seed workflows, PV/PVH part.
func demoSteps() []step {
	kdir := "/var/lib/qvm/vm-kernels/6.1-demo"
	return []step{
		{title: "install a VM kernel (the Debian kernel, with a tiny test initramfs)", cmds: [][]string{
			{"mkdir", "-p", kdir},
			{"cp", xenvm.GuestKernel, kdir + "/vmlinuz"},
			{"cp", xenvm.GuestImage, kdir + "/initramfs"},
		}},
		{title: "create a template and a PVH AppVM on it", cmds: [][]string{
			{"qvm-create", "--class", "TemplateVM", "debian-12", "--label", "black"},
			{"qvm-prefs", "debian-12", "kernelopts", "quiet qvm.keys=1 qvm.qrexec=1 qvm.after=wait"},
			{"qvm-prefs", "debian-12", "vcpus", "1"},
			{"qvm-create", "--template", "debian-12", "--label", "blue", "work"},
		}},
		{title: "create a PV StandaloneVM whose guest asks DHCP for its address", cmds: [][]string{
			{"qvm-create", "--class", "StandaloneVM", "--property", "virt_mode=pv",
				"--property", "kernelopts=quiet qvm.keys=1 qvm.dhcp=eth0 qvm.after=wait", "--property", "vcpus=1", "--label", "red", "pvvm"},
		}},
		{title: "qvm-prefs", cmds: [][]string{{"qvm-prefs", "work"}}, check: func(d *demo) string {
			if !regexp.MustCompile(`(?m)^virt_mode +D  pvh$`).MatchString(d.last) {
				return "work is not a PVH VM by default"
			}
			return ""
		}},
		{title: "start both", cmds: [][]string{{"qvm-start", "work"}, {"qvm-start", "pvvm"}}},
		{title: "qvm-ls -n while they run", cmds: [][]string{{"qvm-ls", "-n"}}, check: all(lsShows("work", string(model.Running)), lsShows("pvvm", string(model.Running)))},
		{title: "the guests print what qvm told them", check: all(guestNetwork("work", false), guestNetwork("pvvm", true))},
		{title: "work's text console, kept by qvm (qvm-console --log; qvm-console work attaches, Ctrl-] leaves)", check: consoleSays("work", "guestinit: key qubes-ip=")},
		{title: "run commands in work through qrexec (qvm-run; its agent is in the guest)", cmds: [][]string{
			{"qvm-run", "--pass-io", "work", "echo I am $(id -un) on $(uname -s)"},
			{"qvm-run", "-u", "root", "--pass-io", "work", "id -u"},
		}, check: func(d *demo) string {
			if strings.TrimSpace(d.last) != "0" {
				return "qvm-run -u root did not run as root"
			}
			return ""
		}},
		{title: "copy a VM's file into dom0 as the seeds do (qvm-run --pass-io ... > file), checksums compared", cmds: [][]string{
			{"qvm-run", "-u", "root", "-p", "work", "mkdir -p /media/user/externalhd && chown user /media/user/externalhd"},
			{"qvm-run", "-p", "work", `head -c 4194304 /dev/urandom > "/media/user/externalhd/win10.raw" && sha256sum "/media/user/externalhd/win10.raw"`},
		}, check: func(d *demo) string {
			f := strings.Fields(d.last)
			if len(f) == 0 {
				return "no checksum from the guest"
			}
			sum, err := d.runTo("/home/user/win10-root.img", "qvm-run", "--pass-io", "work", `cat "/media/user/externalhd/win10.raw"`)
			if err != nil {
				return err.Error()
			}
			fmt.Fprintf(d.w, "sha256 in the guest %s, in dom0 %s\n", f[0], sum)
			if sum != f[0] {
				return "the dom0 copy differs from the guest's file"
			}
			return ""
		}},
		{title: "shut pvvm down and clone it", cmds: [][]string{
			{"qvm-shutdown", "--wait", "pvvm"},
			{"qvm-clone", "pvvm", "pvvm-clone"},
			{"qvm-start", "pvvm-clone"},
			{"qvm-ls", "-n"},
		}, check: all(lsShows("pvvm", string(model.Halted)), lsShows("pvvm-clone", string(model.Running)), guestNetwork("pvvm-clone", true), func(d *demo) string {
			if d.pref("pvvm-clone", "visible_ip") == d.pref("pvvm", "visible_ip") {
				return "the clone has its source's IP"
			}
			return ""
		})},
		{title: "stop everything and remove the clone", cmds: [][]string{
			{"qvm-shutdown", "--wait", "work"},
			{"qvm-kill", "pvvm-clone"},
			{"qvm-remove", "-f", "pvvm-clone"},
			{"qvm-ls", "-n"},
		}, check: all(lsShows("work", string(model.Halted)), lsShows("pvvm-clone", ""), func(d *demo) string {
			if strings.Contains(d.last, "pvvm-clone") {
				return "pvvm-clone is still listed"
			}
			return ""
		})},
	}
}

// runSteps runs the demo in dom0 and returns the exit code.
func runSteps(ctx context.Context, w io.Writer) int {
	d := &demo{ctx: ctx, w: w}
	steps := append(demoSteps(), hvmSteps()...)
	passed := 0
	for i, s := range steps {
		fmt.Fprintf(w, "\n=== step %d/%d: %s\n", i+1, len(steps), s.title)
		msg := ""
		for _, c := range s.cmds {
			if _, err := d.run(c...); err != nil {
				msg = fmt.Sprintf("%s failed: %v", c[0], err)
				break
			}
		}
		if msg == "" && s.check != nil {
			msg = s.check(d)
		}
		if msg != "" {
			fmt.Fprintf(w, "--- step %d FAILED: %s\n", i+1, msg)
			diagnose(w)
			continue
		}
		fmt.Fprintf(w, "--- step %d ok\n", i+1)
		passed++
	}
	fmt.Fprintf(w, "\ndemo: %d/%d steps passed\n", passed, len(steps))
	if passed != len(steps) {
		return 1
	}
	return 0
}

func shellQuote(argv []string) string {
	out := make([]string, len(argv))
	for i, a := range argv {
		if a == "" || strings.ContainsAny(a, " \t'\"$") {
			out[i] = "'" + strings.ReplaceAll(a, "'", `'\''`) + "'"
		} else {
			out[i] = a
		}
	}
	return strings.Join(out, " ")
}

// diagnose shows what helps understand a failed step: the monitors' logs
// and the ends of the guests' consoles.
func diagnose(w io.Writer) {
	for _, pattern := range []string{"/var/lib/qvm/log/*.log", "/var/log/xen/console/guest-*.log", "/var/log/xen/qemu-dm-*.log"} {
		files, _ := filepath.Glob(pattern)
		for _, f := range files {
			b, err := os.ReadFile(f)
			if err != nil || len(b) == 0 {
				continue
			}
			fmt.Fprintf(w, "    --- %s (end):\n%s\n", f, indent(xenvm.Tail(b, 12)))
		}
	}
	if out, err := exec.Command("xl", "list").CombinedOutput(); err == nil {
		fmt.Fprintf(w, "    --- xl list:\n%s\n", indent(string(out)))
	}
}

func indent(s string) string {
	return "    " + strings.ReplaceAll(strings.TrimRight(s, "\n"), "\n", "\n    ")
}
