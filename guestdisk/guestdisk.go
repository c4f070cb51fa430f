// Package guestdisk keeps dom0 out of the disks it serves to VMs.
//
// qvm attaches VM images and discs to loop devices (package loopdev) for
// dom0's block backend. What is on them was written by a guest, or by
// whoever made the disc. Left alone, dom0's udev runs libblkid on every
// loop device as root (Debian's 60-persistent-storage.rules), names
// /dev/disk/by-uuid and by-label links after what it finds (a guest could
// take over a UUID that dom0's fstab mounts), passes LVM and MD metadata to
// pvscan and mdadm, and probes again each time a writer closes the device.
//
// This package holds what keeps dom0 out, installed by `make install`:
//
//   - udev rules (UdevRules, installed as RulesFile) that mark such a loop
//     device as not dom0's at the uevent the kernel sends when its backing
//     file is set, before Debian's storage rules run: no blkid, no
//     /dev/disk links, no LVM or MD assembly, hidden from udisks, never
//     ready for systemd, no inotify watch;
//   - the mark those rules look for: for every file qvm attaches, Mark
//     leaves a file under MarkDir named after the backing file, so discs
//     from anywhere in dom0 and images of any state directory are covered,
//     not only files under the state directories the rules were built for;
//   - an LVM filter (LVMConfig), since lvm commands run by hand scan every
//     block device whatever udev says.
package guestdisk

import (
	_ "embed"
	"errors"
	"fmt"
	"path/filepath"
	"strings"
)

// RulesFile is the name the udev rules are installed as. It sorts before
// Debian's 60-*.rules, which act on the flags the rules set.
const RulesFile = "59-qvm-guest-disks.rules"

//go:embed 59-qvm-guest-disks.rules.in
var rulesTemplate string

//go:embed lvm-guest-disks.conf
var lvmConfig string

// UdevRules returns the udev rules for VM disks under the given state
// directories (their real paths: the kernel reports a loop device's
// backing file with symbolic links resolved). The mark of MarkDir is
// recognised whatever the directories are.
func UdevRules(stateDirs ...string) ([]byte, error) {
	if len(stateDirs) == 0 {
		return nil, errors.New("udev rules: no state directory given (the default is /var/lib/qvm)")
	}
	globs := make([]string, len(stateDirs))
	for i, d := range stateDirs {
		if !filepath.IsAbs(d) || filepath.Clean(d) != d || d == "/" {
			return nil, fmt.Errorf("udev rules: state directory %q: want an absolute, clean path other than /", d)
		}
		if i := strings.IndexFunc(d, func(r rune) bool { return r < ' ' || r == 0x7f || strings.ContainsRune(`*?[]|"\#&`, r) }); i >= 0 {
			return nil, fmt.Errorf("udev rules: state directory %q: character %q would change the rule's pattern; use a path without it", d, d[i])
		}
		globs[i] = d + "/*"
	}
	r := strings.NewReplacer("@QVM_STATE_DIRS@", strings.Join(stateDirs, " "), "@QVM_STATE_GLOBS@", strings.Join(globs, "|"))
	return []byte(r.Replace(rulesTemplate)), nil
}

// LVMConfig returns the LVM configuration section that keeps lvm commands
// off every loop device (LVM cannot tell qvm's from others). Debian 12's
// lvm2 reads no configuration directory: the section goes into
// /etc/lvm/lvmlocal.conf, or its pattern into an existing
// devices/global_filter (see the file's comment).
func LVMConfig() string { return lvmConfig }
