package xl

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
)

// CheckPCIReset applies the strict-reset rule to a host PCI device: it
// returns nil when the kernel knows a way to reset it (an FLR, PM or bus
// reset: sysfs then has a "reset" file for it), an error wrapping
// ErrStrictReset when not, and another error when the device does not
// exist. sysfs is the sysfs mount point, normally "/sys".
func CheckPCIReset(sysfs string, addr PCIAddress) error {
	dir := filepath.Join(sysfs, "bus", "pci", "devices", addr.String())
	if _, err := os.Stat(dir); err != nil {
		if errors.Is(err, fs.ErrNotExist) {
			return fmt.Errorf("PCI device %s: not present on this host (%s is missing)", addr, dir)
		}
		return fmt.Errorf("PCI device %s: %w", addr, err)
	}
	if _, err := os.Stat(filepath.Join(dir, "reset")); err != nil {
		if errors.Is(err, fs.ErrNotExist) {
			return fmt.Errorf("PCI device %s: %w (no FLR, PM or bus reset); giving it to another domain later could leak its state: assign it with the no-strict-reset option if you accept that", addr, ErrStrictReset)
		}
		return fmt.Errorf("PCI device %s: %w", addr, err)
	}
	return nil
}
