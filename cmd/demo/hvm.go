package main

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"time"

	"github.com/qvm-project/qvm/e2e/xenvm"
	"github.com/qvm-project/qvm/stubdom/testiso"
	model "github.com/qvm-project/qvm/vm"
)

// installerISO is the demo's "installer" disc in the share: a small Linux
// that asks DHCP for an address on its emulated NIC, prints what it got,
// and powers off, as an installer halts its VM when it is done.
const installerISO = "installer.iso"

// hvmParts builds the installer disc into files and returns the dom0
// archives an HVM needs: Xen's device model and firmware, and qvm's
// stubdomain (make dom0-qemu-image stubdom-image).
func hvmParts(p xenvm.Parts, files map[string]string) ([]string, error) {
	build := filepath.Dir(filepath.Dir(p.Kernel))
	extra := []string{
		filepath.Join(build, "dom0", "dom0-qemu.cpio.gz"),
		filepath.Join(build, "stubdom", "stubdom-dom0.cpio.gz"),
	}
	for _, f := range extra {
		if _, err := os.Stat(f); err != nil {
			return nil, fmt.Errorf("HVM parts not built (run make dom0-qemu-image stubdom-image): %w", err)
		}
	}
	s, err := testiso.FromDom0Dir(filepath.Dir(p.Kernel))
	if err != nil {
		return nil, err
	}
	dir, err := os.MkdirTemp("", "qvm-demo-")
	if err != nil {
		return nil, err
	}
	s.WorkDir, s.Label, s.Out = dir, testiso.PowerOffLabel, filepath.Join(dir, installerISO)
	if err := testiso.Build(context.Background(), s); err != nil {
		return nil, fmt.Errorf("build the installer disc: %w", err)
	}
	files[installerISO] = s.Out
	return extra, nil
}

// hvmSteps boot an HVM from an installer disc with qvm-start --cdrom, as
// the seeds do, through qvm's stubdomain; the disc stays in the VM work,
// whose own block backend serves it (--cdrom=work:/path).
func hvmSteps() []step {
	const iso = "/home/user/installcd.iso"
	loops := []string{"qvm-run", "-u", "root", "--pass-io", "work", "cat /sys/block/loop*/loop/backing_file 2>/dev/null; true"}
	return []step{
		{title: "keep the installer disc in a VM, as the seeds say (never copy it to dom0)", cmds: [][]string{
			{"qvm-start", "work"},
		}, check: func(d *demo) string {
			if err := d.runFrom(filepath.Join(xenvm.ShareMount, installerISO), "qvm-run", "--pass-io", "work", "cat > "+iso); err != nil {
				return err.Error()
			}
			if _, err := d.run("qvm-run", "--pass-io", "work", "ls -l "+iso); err != nil {
				return err.Error()
			}
			return ""
		}},
		{title: "create an HVM and boot it from the disc in work with --cdrom=work:PATH (QEMU in qvm's stubdomain, the disc served by work)", cmds: [][]string{
			{"qvm-create", "my-new-vm", "--class", "StandaloneVM", "--property", "virt_mode=hvm", "--property", "kernel=", "--label=green",
				"--property", "memory=256", "--property", "vcpus=1"},
			{"qvm-start", "my-new-vm", "--cdrom=work:" + iso},
			{"qvm-block", "ls"},
			{"qvm-prefs", "my-new-vm", "stubdom_xid"},
			{"qvm-ls", "-n"},
		}, check: all(lsShows("my-new-vm", string(model.Running)), hvmDHCP("my-new-vm"))},
		{title: "the installer powers off: the HVM halts, its stubdomain goes with it, and work's loop device for the disc too", check: all(hvmHalts("my-new-vm"), func(d *demo) string {
			deadline := time.Now().Add(2 * time.Minute)
			for {
				out, err := d.run(loops...)
				switch {
				case err != nil:
					return err.Error()
				case strings.TrimSpace(out) == "":
					return ""
				case time.Now().After(deadline):
					return "work still has a loop device for the disc: " + out
				}
				time.Sleep(2 * time.Second)
			}
		})},
		{title: "shut work down", cmds: [][]string{{"qvm-shutdown", "--wait", "work"}, {"qvm-ls", "-n"}}, check: lsShows("work", string(model.Halted))},
	}
}

// hvmHalts waits for the HVM to halt by itself, then shows that no domain
// of it (the guest or its stubdomain) is left.
func hvmHalts(vm string) func(d *demo) string {
	return func(d *demo) string {
		deadline := time.Now().Add(5 * time.Minute)
		for {
			out, _ := exec.CommandContext(d.ctx, "qvm-ls", "--raw-data", "--fields", "name,state").Output()
			if strings.Contains(string(out), vm+"|Halted") {
				break
			}
			if time.Now().After(deadline) {
				return vm + " did not halt in 5 minutes after its installer powered off"
			}
			select {
			case <-d.ctx.Done():
				return d.ctx.Err().Error()
			case <-time.After(time.Second):
			}
		}
		if _, err := d.run("qvm-ls", "-n"); err != nil {
			return err.Error()
		}
		if msg := lsShows(vm, string(model.Halted))(d); msg != "" {
			return msg
		}
		if _, err := d.run("xl", "list"); err != nil {
			return err.Error()
		}
		if strings.Contains(d.last, vm) {
			return "xl still lists a domain of " + vm
		}
		return ""
	}
}

// hvmDHCP checks that the HVM's guest got, by DHCP from the stubdomain,
// the address, gateway and DNS qvm-ls -n and qvm-prefs show.
func hvmDHCP(vm string) func(d *demo) string {
	return func(d *demo) string {
		domid := d.pref(vm, "xid")
		ip, gw, mask := d.pref(vm, "visible_ip"), d.pref(vm, "visible_gateway"), d.pref(vm, "visible_netmask")
		want := fmt.Sprintf("dhcp ip=%s subnet=%s router=%s dns=%s", ip, mask, gw, d.pref(vm, "dns"))
		deadline := time.Now().Add(10 * time.Minute)
		for time.Now().Before(deadline) {
			out, _ := exec.CommandContext(d.ctx, "xl", "dmesg").Output()
			for _, got := range testiso.Lines(string(out), domid) {
				if !strings.HasPrefix(got, "dhcp ") {
					continue
				}
				fmt.Fprintf(d.w, "  %s's guest (booted from the disc) asked DHCP and got: %s\n", vm, got)
				fmt.Fprintf(d.w, "  qvm-ls -n shows:                                        ip=%s router=%s\n", ip, gw)
				if got != want {
					return fmt.Sprintf("the guest got %q, want %q", got, want)
				}
				return ""
			}
			select {
			case <-d.ctx.Done():
				return d.ctx.Err().Error()
			case <-time.After(time.Second):
			}
		}
		return vm + "'s guest printed no DHCP line in 10 minutes"
	}
}
