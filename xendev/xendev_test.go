package xendev

import (
	"context"
	"encoding/binary"
	"errors"
	"os"
	"syscall"
	"testing"
	"time"
	"unsafe"

	"golang.org/x/sys/unix"
)

// The request numbers, as the kernel's uapi headers (Linux 6.1 and
// torvalds/linux master: include/uapi/xen/evtchn.h, gntdev.h, gntalloc.h)
// compute them with gcc.
func TestIoctlNumbers(t *testing.T) {
	for _, c := range []struct {
		name      string
		got, want uintptr
	}{
		{"IOCTL_EVTCHN_BIND_VIRQ", ioctlEvtchnBindVirq, 0x00044500},
		{"IOCTL_EVTCHN_BIND_INTERDOMAIN", ioctlEvtchnBindInterdomain, 0x00084501},
		{"IOCTL_EVTCHN_BIND_UNBOUND_PORT", ioctlEvtchnBindUnboundPort, 0x00044502},
		{"IOCTL_EVTCHN_UNBIND", ioctlEvtchnUnbind, 0x00044503},
		{"IOCTL_EVTCHN_NOTIFY", ioctlEvtchnNotify, 0x00044504},
		{"IOCTL_EVTCHN_RESET", ioctlEvtchnReset, 0x00004505},
		{"IOCTL_GNTDEV_MAP_GRANT_REF", ioctlGntdevMapGrantRef, 0x00184700},
		{"IOCTL_GNTDEV_UNMAP_GRANT_REF", ioctlGntdevUnmapGrantRef, 0x00104701},
		{"IOCTL_GNTDEV_SET_MAX_GRANTS", ioctlGntdevSetMaxGrants, 0x00044703},
		{"IOCTL_GNTDEV_SET_UNMAP_NOTIFY", ioctlGntdevSetUnmapNotify, 0x00104707},
		{"IOCTL_GNTALLOC_ALLOC_GREF", ioctlGntallocAllocGref, 0x00184705},
		{"IOCTL_GNTALLOC_DEALLOC_GREF", ioctlGntallocDeallocGref, 0x00104706},
		{"IOCTL_GNTALLOC_SET_UNMAP_NOTIFY", ioctlGntallocSetUnmapNotify, 0x00104707},
	} {
		if c.got != c.want {
			t.Errorf("%s = %#08x, want %#08x", c.name, c.got, c.want)
		}
	}
}

// The field offsets the kernel reads and writes.
func TestIoctlLayouts(t *testing.T) {
	var m gntdevMapGrantRef
	var a gntallocAllocGref
	var n unmapNotify
	for _, c := range []struct {
		name      string
		got, want uintptr
	}{
		{"map_grant_ref.index", unsafe.Offsetof(m.index), 8},
		{"map_grant_ref.refs", unsafe.Offsetof(m.refs), 16},
		{"grant_ref size", unsafe.Sizeof(gntdevGrantRef{}), 8},
		{"alloc_gref.flags", unsafe.Offsetof(a.flags), 2},
		{"alloc_gref.count", unsafe.Offsetof(a.count), 4},
		{"alloc_gref.index", unsafe.Offsetof(a.index), 8},
		{"alloc_gref.gref_ids", unsafe.Offsetof(a.grefs), 16},
		{"unmap_notify.action", unsafe.Offsetof(n.action), 8},
		{"unmap_notify.event_channel_port", unsafe.Offsetof(n.port), 12},
	} {
		if c.got != c.want {
			t.Errorf("%s at %d, want %d", c.name, c.got, c.want)
		}
	}
}

// fakeEvtchn is an Evtchn over one end of a socket pair: what the test
// writes to the other end is read as pending ports, and what Unmask writes
// comes out there.
func fakeEvtchn(t *testing.T) (*Evtchn, *os.File) {
	t.Helper()
	fds, err := unix.Socketpair(unix.AF_UNIX, unix.SOCK_STREAM|unix.SOCK_NONBLOCK|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		t.Fatal(err)
	}
	e := &Evtchn{f: os.NewFile(uintptr(fds[0]), "fake-evtchn")}
	peer := os.NewFile(uintptr(fds[1]), "fake-evtchn-peer")
	t.Cleanup(func() { e.f.Close(); peer.Close() })
	return e, peer
}

func TestPendingAndUnmask(t *testing.T) {
	e, peer := fakeEvtchn(t)
	got := make(chan []Port, 1)
	go func() {
		ports := make([]Port, 8)
		n, err := e.Pending(context.Background(), ports)
		if err != nil {
			t.Error(err)
		}
		got <- ports[:n]
	}()
	time.Sleep(20 * time.Millisecond) // let it block
	raw := binary.NativeEndian.AppendUint32(binary.NativeEndian.AppendUint32(nil, 7), 42)
	if _, err := peer.Write(raw); err != nil {
		t.Fatal(err)
	}
	ports := <-got
	if len(ports) != 2 || ports[0] != 7 || ports[1] != 42 {
		t.Fatalf("Pending = %v, want [7 42]", ports)
	}
	if err := e.Unmask(ports...); err != nil {
		t.Fatal(err)
	}
	buf := make([]byte, 16)
	n, err := peer.Read(buf)
	if err != nil || n != 8 || binary.NativeEndian.Uint32(buf) != 7 || binary.NativeEndian.Uint32(buf[4:]) != 42 {
		t.Fatalf("Unmask wrote %x (%v), want ports 7 and 42", buf[:n], err)
	}
}

func TestPendingCancel(t *testing.T) {
	e, peer := fakeEvtchn(t)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() {
		_, err := e.Pending(ctx, make([]Port, 1))
		done <- err
	}()
	time.Sleep(20 * time.Millisecond)
	cancel()
	select {
	case err := <-done:
		if !errors.Is(err, context.Canceled) {
			t.Fatalf("cancelled Pending: %v, want context.Canceled", err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("Pending did not return after its context was cancelled")
	}
	// The cancellation does not linger: the next wait sees the next event.
	if _, err := peer.Write(binary.NativeEndian.AppendUint32(nil, 3)); err != nil {
		t.Fatal(err)
	}
	ports := make([]Port, 1)
	n, err := e.Pending(context.Background(), ports)
	if err != nil || n != 1 || ports[0] != 3 {
		t.Fatalf("Pending after a cancel = %v %v, want [3]", ports[:n], err)
	}
}

func TestPendingDeadline(t *testing.T) {
	e, _ := fakeEvtchn(t)
	ctx, cancel := context.WithTimeout(context.Background(), 50*time.Millisecond)
	defer cancel()
	start := time.Now()
	_, err := e.Pending(ctx, make([]Port, 1))
	if !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("Pending past its deadline: %v, want context.DeadlineExceeded", err)
	}
	if d := time.Since(start); d < 40*time.Millisecond || d > 5*time.Second {
		t.Fatalf("Pending returned after %v, want about 50ms", d)
	}
}

func TestPendingClose(t *testing.T) {
	e, _ := fakeEvtchn(t)
	done := make(chan error, 1)
	go func() {
		_, err := e.Pending(context.Background(), make([]Port, 1))
		done <- err
	}()
	time.Sleep(20 * time.Millisecond)
	if err := e.Close(); err != nil {
		t.Fatal(err)
	}
	select {
	case err := <-done:
		if !errors.Is(err, os.ErrClosed) {
			t.Fatalf("Pending on a closed Evtchn: %v, want os.ErrClosed", err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("Pending did not return after Close")
	}
}

// The ioctl helper passes the argument and returns the kernel's errno
// (here a socket's, which has no such ioctl).
func TestIoctlErrno(t *testing.T) {
	e, _ := fakeEvtchn(t)
	_, err := e.BindUnboundPort(0)
	if !errors.Is(err, syscall.ENOTTY) {
		t.Fatalf("evtchn ioctl on a socket: %v, want ENOTTY", err)
	}
}
