package bootinit

import (
	"fmt"

	"golang.org/x/sys/unix"
)

// PowerOff syncs the file systems and powers the machine off. Under Xen,
// dom0 powering off shuts the whole machine down, so QEMU started with
// -no-reboot exits. It returns only if the reboot system call failed.
func PowerOff() error {
	unix.Sync()
	if err := unix.Reboot(unix.LINUX_REBOOT_CMD_POWER_OFF); err != nil {
		return fmt.Errorf("power off: %w", err)
	}
	return nil
}
