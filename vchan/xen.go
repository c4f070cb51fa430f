package vchan

import (
	"context"
	"errors"
	"os"

	"github.com/qvm-project/qvm/xendev"
)

// xenHyper sets channels up through Linux's Xen devices. Each event
// channel and each run of pages has its own device handle, closed with it.
type xenHyper struct{}

// xenEvtchn is a port bound through its own /dev/xen/evtchn, with a
// goroutine that receives its events.
type xenEvtchn struct {
	e    *xendev.Evtchn
	p    xendev.Port
	done chan struct{}
}

func (xenHyper) bind(h eventHandler, bind func(*xendev.Evtchn) (xendev.Port, error)) (evtchn, error) {
	e, err := xendev.OpenEvtchn()
	if err != nil {
		return nil, err
	}
	p, err := bind(e)
	if err == nil {
		err = e.Unmask(p)
	}
	if err != nil {
		return nil, errors.Join(err, e.Close())
	}
	x := &xenEvtchn{e: e, p: p, done: make(chan struct{})}
	go x.receive(h)
	return x, nil
}

// receive waits for events, unmasks the port and tells h, until the
// device is closed.
func (x *xenEvtchn) receive(h eventHandler) {
	defer close(x.done)
	ports := make([]xendev.Port, 8)
	for {
		n, err := x.e.Pending(context.Background(), ports)
		if err == nil {
			err = x.e.Unmask(ports[:n]...)
		}
		if err != nil {
			if !errors.Is(err, os.ErrClosed) {
				h.fail(err)
			}
			return
		}
		h.wake()
	}
}

func (x *xenEvtchn) port() uint32  { return uint32(x.p) }
func (x *xenEvtchn) notify() error { return x.e.Notify(x.p) }

// close unbinds the port (by closing the device) and waits for the
// receiving goroutine to end.
func (x *xenEvtchn) close() error {
	err := x.e.Close()
	<-x.done
	return err
}

func (xh xenHyper) bindUnbound(remote uint32, h eventHandler) (evtchn, error) {
	return xh.bind(h, func(e *xendev.Evtchn) (xendev.Port, error) { return e.BindUnboundPort(remote) })
}

func (xh xenHyper) bindInterdomain(remote, port uint32, h eventHandler) (evtchn, error) {
	return xh.bind(h, func(e *xendev.Evtchn) (xendev.Port, error) {
		return e.BindInterdomain(remote, xendev.Port(port))
	})
}

// xenShared is pages granted through their own /dev/xen/gntalloc.
type xenShared struct {
	g *xendev.Gntalloc
	s *xendev.Shared
}

func (xenHyper) share(remote uint32, n int, writable bool) (pages, error) {
	g, err := xendev.OpenGntalloc()
	if err != nil {
		return nil, err
	}
	s, err := g.Alloc(remote, n, writable)
	if err != nil {
		return nil, errors.Join(err, g.Close())
	}
	return &xenShared{g: g, s: s}, nil
}

func (x *xenShared) bytes() []byte  { return x.s.Bytes() }
func (x *xenShared) refs() []uint32 { return x.s.Refs() }
func (x *xenShared) close() error   { return errors.Join(x.s.Close(), x.g.Close()) }
func (x *xenShared) notifyOnUnmap(offset int, port uint32) error {
	return x.s.SetUnmapNotify(offset, xendev.NotifyClearByte|xendev.NotifySendEvent, xendev.Port(port))
}

// xenMapped is pages mapped through their own /dev/xen/gntdev.
type xenMapped struct {
	g *xendev.Gntdev
	m *xendev.Mapping
}

func (xenHyper) mapGrants(remote uint32, refs []uint32, writable bool) (pages, error) {
	g, err := xendev.OpenGntdev()
	if err != nil {
		return nil, err
	}
	m, err := g.Map(remote, refs, writable)
	if err != nil {
		return nil, errors.Join(err, g.Close())
	}
	return &xenMapped{g: g, m: m}, nil
}

func (x *xenMapped) bytes() []byte  { return x.m.Bytes() }
func (x *xenMapped) refs() []uint32 { return nil }
func (x *xenMapped) close() error   { return errors.Join(x.m.Close(), x.g.Close()) }
func (x *xenMapped) notifyOnUnmap(offset int, port uint32) error {
	return x.m.SetUnmapNotify(offset, xendev.NotifyClearByte|xendev.NotifySendEvent, xendev.Port(port))
}
