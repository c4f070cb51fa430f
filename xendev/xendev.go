// Package xendev is a thin, typed layer over Linux's Xen device files, in
// pure Go: /dev/xen/evtchn (event channels), /dev/xen/gntdev (mapping pages
// another domain granted) and /dev/xen/gntalloc (granting pages of ours to
// another domain).
//
// The ioctl numbers and argument layouts are those of the kernel's uapi
// headers include/uapi/xen/evtchn.h, gntdev.h and gntalloc.h (all of them
// _IOC(_IOC_NONE, type, nr, size)). Every handle, mapping, grant and port
// is released by the Close of the object that owns it, and every
// constructor releases what it took when it fails.
package xendev

import (
	"errors"
	"fmt"
	"os"
	"syscall"
	"unsafe"

	"golang.org/x/sys/unix"
)

// Default paths of the device files.
const (
	EvtchnPath   = "/dev/xen/evtchn"
	GntdevPath   = "/dev/xen/gntdev"
	GntallocPath = "/dev/xen/gntalloc"
)

// PageSize is the size of a Xen page, the unit of grants.
const PageSize = 4096

// Ioctl requests, from the kernel's uapi headers: _IOC(_IOC_NONE, type,
// nr, size), which on x86 and arm is size<<16 | type<<8 | nr.
const (
	ioctlEvtchnBindVirq         = 4<<16 | 'E'<<8 // nr 0
	ioctlEvtchnBindInterdomain  = unsafe.Sizeof(bindInterdomain{})<<16 | 'E'<<8 | 1
	ioctlEvtchnBindUnboundPort  = 4<<16 | 'E'<<8 | 2
	ioctlEvtchnUnbind           = 4<<16 | 'E'<<8 | 3
	ioctlEvtchnNotify           = 4<<16 | 'E'<<8 | 4
	ioctlEvtchnReset            = 0<<16 | 'E'<<8 | 5
	ioctlGntdevMapGrantRef      = unsafe.Sizeof(gntdevMapGrantRef{})<<16 | 'G'<<8 // nr 0
	ioctlGntdevUnmapGrantRef    = unsafe.Sizeof(gntdevUnmapGrantRef{})<<16 | 'G'<<8 | 1
	ioctlGntdevSetMaxGrants     = 4<<16 | 'G'<<8 | 3
	ioctlGntdevSetUnmapNotify   = unsafe.Sizeof(unmapNotify{})<<16 | 'G'<<8 | 7
	ioctlGntallocAllocGref      = unsafe.Sizeof(gntallocAllocGref{})<<16 | 'G'<<8 | 5
	ioctlGntallocDeallocGref    = unsafe.Sizeof(gntallocDeallocGref{})<<16 | 'G'<<8 | 6
	ioctlGntallocSetUnmapNotify = unsafe.Sizeof(unmapNotify{})<<16 | 'G'<<8 | 7
)

// struct ioctl_evtchn_bind_interdomain.
type bindInterdomain struct {
	remoteDomain, remotePort uint32
}

// struct ioctl_gntdev_map_grant_ref with its one-element refs array; the
// ioctl reads count refs from offset 16.
type gntdevMapGrantRef struct {
	count uint32
	_     uint32
	index uint64
	refs  [1]gntdevGrantRef
}

// struct ioctl_gntdev_grant_ref.
type gntdevGrantRef struct {
	domid uint32
	ref   uint32
}

// struct ioctl_gntdev_unmap_grant_ref.
type gntdevUnmapGrantRef struct {
	index uint64
	count uint32
	_     uint32
}

// struct ioctl_gntdev_unmap_notify and struct ioctl_gntalloc_unmap_notify
// (the same layout).
type unmapNotify struct {
	index  uint64
	action uint32
	port   uint32
}

// struct ioctl_gntalloc_alloc_gref with its one-element gref_ids array
// (padded to 24 bytes, as the C struct is); the kernel writes count ids
// from offset 16.
type gntallocAllocGref struct {
	domid uint16
	flags uint16
	count uint32
	index uint64
	grefs [1]uint32
	_     uint32
}

// struct ioctl_gntalloc_dealloc_gref (padded to 16 bytes).
type gntallocDeallocGref struct {
	index uint64
	count uint32
	_     uint32
}

// UnmapAction is what the kernel does when a shared or mapped page goes
// away (the process unmaps it, closes the device or dies): the peer learns
// of it even if this process crashed.
type UnmapAction uint32

// Unmap actions (UNMAP_NOTIFY_*), which may be combined.
const (
	// NotifyClearByte sets the byte at the notification offset to 0.
	NotifyClearByte UnmapAction = 1
	// NotifySendEvent notifies the event channel port.
	NotifySendEvent UnmapAction = 2
)

// ErrClosed is returned by operations on a closed handle.
var ErrClosed = errors.New("xendev: handle is closed")

// openDevice opens a device file for reading and writing. The file is in
// non-blocking mode, so that Go's poller waits on it and read deadlines
// apply.
func openDevice(path string) (*os.File, error) {
	f, err := os.OpenFile(path, os.O_RDWR|syscall.O_NONBLOCK, 0)
	if err != nil {
		return nil, fmt.Errorf("xendev: open %s: %w", path, err)
	}
	return f, nil
}

// ioctl runs one ioctl on f with arg pointing at its argument, and returns
// the call's result (a port number for the evtchn binds).
func ioctl(f *os.File, req uintptr, arg unsafe.Pointer) (uintptr, error) {
	rc, err := f.SyscallConn()
	if err != nil {
		return 0, err
	}
	var r uintptr
	var errno syscall.Errno
	if err := rc.Control(func(fd uintptr) {
		r, _, errno = unix.Syscall(unix.SYS_IOCTL, fd, req, uintptr(arg))
	}); err != nil {
		return 0, err
	}
	if errno != 0 {
		return 0, errno
	}
	return r, nil
}

// mmap maps length bytes of f at offset, shared.
func mmap(f *os.File, offset uint64, length int, prot int) ([]byte, error) {
	rc, err := f.SyscallConn()
	if err != nil {
		return nil, err
	}
	var mem []byte
	var merr error
	if err := rc.Control(func(fd uintptr) {
		mem, merr = unix.Mmap(int(fd), int64(offset), length, prot, unix.MAP_SHARED)
	}); err != nil {
		return nil, err
	}
	return mem, merr
}
