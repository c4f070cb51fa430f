package xendev

import (
	"context"
	"errors"
	"fmt"
	"os"
	"sync"
	"time"
	"unsafe"
)

// Port is an event channel port number of this domain.
type Port uint32

// Evtchn is an open /dev/xen/evtchn: the event channel ports bound through
// it are this process's; closing it unbinds them all.
//
// An event that arrives on a bound port makes it pending: Pending returns
// it, and the port stays masked (further events on it are held back) until
// Unmask is called with it. Bind, Unbind, Notify and Unmask may be called
// from any goroutine; Pending calls are serialised.
type Evtchn struct {
	f      *os.File
	waitMu sync.Mutex // one Pending at a time: it owns the read deadline
}

// OpenEvtchn opens /dev/xen/evtchn.
func OpenEvtchn() (*Evtchn, error) {
	f, err := openDevice(EvtchnPath)
	if err != nil {
		return nil, err
	}
	return &Evtchn{f: f}, nil
}

// Close unbinds every port bound through e and closes the device. A
// Pending waiting in another goroutine returns an error.
func (e *Evtchn) Close() error {
	if err := e.f.Close(); err != nil {
		return fmt.Errorf("xendev: close %s: %w", EvtchnPath, err)
	}
	return nil
}

func (e *Evtchn) bind(what string, req uintptr, arg unsafe.Pointer) (Port, error) {
	r, err := ioctl(e.f, req, arg)
	if err != nil {
		return 0, fmt.Errorf("xendev: evtchn: %s: %w", what, err)
	}
	return Port(r), nil
}

// BindInterdomain binds a new local port to port remote of domain domid,
// which that domain allocated for us (see BindUnboundPort).
func (e *Evtchn) BindInterdomain(domid uint32, remote Port) (Port, error) {
	arg := bindInterdomain{remoteDomain: domid, remotePort: uint32(remote)}
	return e.bind(fmt.Sprintf("bind to port %d of domain %d", remote, domid), ioctlEvtchnBindInterdomain, unsafe.Pointer(&arg))
}

// BindUnboundPort allocates a new local port that domain domid may bind to
// (with BindInterdomain on its side, giving the returned port).
func (e *Evtchn) BindUnboundPort(domid uint32) (Port, error) {
	arg := domid
	return e.bind(fmt.Sprintf("allocate a port for domain %d", domid), ioctlEvtchnBindUnboundPort, unsafe.Pointer(&arg))
}

// BindVirq binds a new local port to virtual interrupt virq (for example
// VIRQ_DOM_EXC, 3, raised when a domain dies).
func (e *Evtchn) BindVirq(virq uint32) (Port, error) {
	arg := virq
	return e.bind(fmt.Sprintf("bind virq %d", virq), ioctlEvtchnBindVirq, unsafe.Pointer(&arg))
}

// Unbind closes port p, which must have been bound through e.
func (e *Evtchn) Unbind(p Port) error {
	arg := uint32(p)
	if _, err := ioctl(e.f, ioctlEvtchnUnbind, unsafe.Pointer(&arg)); err != nil {
		return fmt.Errorf("xendev: evtchn: unbind port %d: %w", p, err)
	}
	return nil
}

// Notify sends an event on port p (bound through e) to its remote end.
func (e *Evtchn) Notify(p Port) error {
	arg := uint32(p)
	if _, err := ioctl(e.f, ioctlEvtchnNotify, unsafe.Pointer(&arg)); err != nil {
		return fmt.Errorf("xendev: evtchn: notify port %d: %w", p, err)
	}
	return nil
}

// Reset empties the queue of pending ports and clears its overflow error.
func (e *Evtchn) Reset() error {
	if _, err := ioctl(e.f, ioctlEvtchnReset, nil); err != nil {
		return fmt.Errorf("xendev: evtchn: reset: %w", err)
	}
	return nil
}

// Unmask lets events through again on ports that Pending returned. A port
// not bound through e is ignored.
func (e *Evtchn) Unmask(ports ...Port) error {
	if len(ports) == 0 {
		return nil
	}
	if _, err := e.f.Write(portBytes(ports)); err != nil {
		return fmt.Errorf("xendev: evtchn: unmask ports %v: %w", ports, err)
	}
	return nil
}

// aLongTimeAgo is a read deadline that has passed: it wakes a blocked read.
var aLongTimeAgo = time.Unix(1, 0)

// Pending waits until at least one port has a pending event, then stores
// the pending ports (up to len(ports)) in ports and returns how many. The
// ports stay masked until Unmask. The wait ends early with ctx's error when
// ctx ends, and with an error when e is closed.
func (e *Evtchn) Pending(ctx context.Context, ports []Port) (int, error) {
	if len(ports) == 0 {
		return 0, errors.New("xendev: evtchn: Pending needs room for at least one port")
	}
	if err := ctx.Err(); err != nil {
		return 0, fmt.Errorf("xendev: evtchn: wait for events: %w", err)
	}
	e.waitMu.Lock()
	defer e.waitMu.Unlock()
	dl, hasDeadline := ctx.Deadline() // zero: no deadline
	if err := e.f.SetReadDeadline(dl); err != nil {
		return 0, fmt.Errorf("xendev: evtchn: wait for events: %w", err)
	}
	cancelled := make(chan struct{})
	stop := context.AfterFunc(ctx, func() {
		e.f.SetReadDeadline(aLongTimeAgo)
		close(cancelled)
	})
	n, err := e.f.Read(portBytes(ports))
	if !stop() {
		// The wake-up ran or is running: let it finish, so that it cannot
		// touch the deadline of the next call.
		<-cancelled
	}
	if err != nil {
		switch {
		case ctx.Err() != nil:
			err = ctx.Err()
		case hasDeadline && errors.Is(err, os.ErrDeadlineExceeded):
			// The file's deadline fired a moment before ctx's.
			err = context.DeadlineExceeded
		}
		return 0, fmt.Errorf("xendev: evtchn: wait for events: %w", err)
	}
	if n%4 != 0 || n == 0 {
		return 0, fmt.Errorf("xendev: evtchn: read %d bytes, not whole ports", n)
	}
	return n / 4, nil
}

// portBytes is the memory of ports as bytes, as the device reads and
// writes them (native-endian u32s).
func portBytes(ports []Port) []byte {
	return unsafe.Slice((*byte)(unsafe.Pointer(&ports[0])), len(ports)*4)
}
