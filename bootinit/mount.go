package bootinit

import (
	"errors"
	"fmt"
	"os"

	"golang.org/x/sys/unix"
)

// Mount is one file system to mount.
type Mount struct {
	Source string
	Target string
	FSType string
	Flags  uintptr
	Data   string
}

// BaseMounts are the kernel file systems every init needs, in order:
// proc, sysfs, devtmpfs, a tmpfs on /run and /tmp, devpts and /dev/shm.
func BaseMounts() []Mount {
	const nosuid = unix.MS_NOSUID | unix.MS_NODEV | unix.MS_NOEXEC
	return []Mount{
		{Source: "proc", Target: "/proc", FSType: "proc", Flags: nosuid},
		{Source: "sysfs", Target: "/sys", FSType: "sysfs", Flags: nosuid},
		{Source: "devtmpfs", Target: "/dev", FSType: "devtmpfs", Flags: unix.MS_NOSUID, Data: "mode=0755"},
		{Source: "tmpfs", Target: "/run", FSType: "tmpfs", Flags: unix.MS_NOSUID | unix.MS_NODEV, Data: "mode=0755"},
		{Source: "tmpfs", Target: "/tmp", FSType: "tmpfs", Flags: unix.MS_NOSUID | unix.MS_NODEV, Data: "mode=1777"},
		{Source: "devpts", Target: "/dev/pts", FSType: "devpts", Flags: unix.MS_NOSUID | unix.MS_NOEXEC, Data: "gid=5,mode=620,ptmxmode=666"},
		{Source: "tmpfs", Target: "/dev/shm", FSType: "tmpfs", Flags: unix.MS_NOSUID | unix.MS_NODEV, Data: "mode=1777"},
	}
}

// Do creates the mount point and mounts m. A file system of the same type
// already mounted there (e.g. devtmpfs mounted by the kernel) is not an
// error.
func (m Mount) Do() error {
	if err := os.MkdirAll(m.Target, 0o755); err != nil {
		return fmt.Errorf("mount %s on %s: %w", m.FSType, m.Target, err)
	}
	err := unix.Mount(m.Source, m.Target, m.FSType, m.Flags, m.Data)
	if errors.Is(err, unix.EBUSY) && mountedAs(m.Target, m.FSType) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("mount %s on %s: %w", m.FSType, m.Target, err)
	}
	return nil
}

// MountAll mounts ms in order and stops at the first failure.
func MountAll(ms []Mount) error {
	for _, m := range ms {
		if err := m.Do(); err != nil {
			return err
		}
	}
	return nil
}

// mountedAs reports whether target is the root of a mount of type fstype.
func mountedAs(target, fstype string) bool {
	var st unix.Statfs_t
	if err := unix.Statfs(target, &st); err != nil {
		return false
	}
	magic := map[string]int64{
		"devtmpfs": unix.TMPFS_MAGIC,
		"tmpfs":    unix.TMPFS_MAGIC,
		"proc":     unix.PROC_SUPER_MAGIC,
		"sysfs":    unix.SYSFS_MAGIC,
		"devpts":   unix.DEVPTS_SUPER_MAGIC,
	}
	want, ok := magic[fstype]
	return ok && int64(st.Type) == want
}
