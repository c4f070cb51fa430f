package vchan

import (
	"context"
	"errors"
	"fmt"
	"net"
	"strconv"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/qvm-project/qvm/xenstore"
)

// hyper is the part of Xen that setting up a channel needs: event
// channels and grants. xenHyper is the real one, through /dev/xen.
type hyper interface {
	// bindUnbound allocates a port that domain remote may bind to.
	bindUnbound(remote uint32, h eventHandler) (evtchn, error)
	// bindInterdomain binds to port of domain remote.
	bindInterdomain(remote, port uint32, h eventHandler) (evtchn, error)
	// share grants n zeroed pages of ours to domain remote.
	share(remote uint32, n int, writable bool) (pages, error)
	// mapGrants maps pages domain remote granted us, contiguously.
	mapGrants(remote uint32, refs []uint32, writable bool) (pages, error)
}

// eventHandler gets an event channel's events: wake for each event, fail
// when events can no longer be received.
type eventHandler interface {
	wake()
	fail(error)
}

// evtchn is a bound event channel port.
type evtchn interface {
	port() uint32
	notify() error
	close() error
}

// pages is a run of shared or mapped pages.
type pages interface {
	bytes() []byte
	refs() []uint32 // the grant references of shared pages
	// notifyOnUnmap makes their going away (even by a crash) zero the
	// byte at offset and send an event on port.
	notifyOnUnmap(offset int, port uint32) error
	close() error
}

// relay passes a channel's events to its Conn once the Conn exists (an
// event before that is of no interest: the Conn looks at the page before
// it waits).
type relay struct{ c atomic.Pointer[Conn] }

func (r *relay) wake() {
	if c := r.c.Load(); c != nil {
		c.wake()
	}
}

func (r *relay) fail(err error) {
	if c := r.c.Load(); c != nil {
		c.eventError(err)
	}
}

// undo is a list of releases, run last first.
type undo []func() error

func (u *undo) add(f func() error) { *u = append(*u, f) }

func (u *undo) run() error {
	var errs []error
	for i := len(*u) - 1; i >= 0; i-- {
		if err := (*u)[i](); err != nil {
			errs = append(errs, err)
		}
	}
	*u = nil
	return errors.Join(errs...)
}

// take returns a function that runs the releases, and empties u.
func (u *undo) take() func() error {
	list := *u
	*u = nil
	return list.run
}

// KeyPath returns the xenstore directory where the server domain publishes
// the channel for the client domain on port.
func KeyPath(server, client uint32, port int) string {
	return KeysDir(server, client) + "/" + strconv.Itoa(port)
}

// KeysDir returns the xenstore directory holding, one per port, the
// channels the server domain publishes for the client domain.
func KeysDir(server, client uint32) string {
	return "/local/domain/" + strconv.FormatUint(uint64(server), 10) + "/data/vchan/" +
		strconv.FormatUint(uint64(client), 10)
}

// ownDomid asks xenstore which domain we are (the "domid" key of our
// home).
func ownDomid(ctx context.Context, xs *xenstore.Client) (uint32, error) {
	v, err := xs.ReadString(ctx, "domid")
	if err != nil {
		return 0, fmt.Errorf("read our domain id: %w", err)
	}
	id, err := strconv.ParseUint(v, 10, 32)
	if err != nil {
		return 0, fmt.Errorf("our domain id %q: %w", v, err)
	}
	return uint32(id), nil
}

// Server publishes a channel for domain peer on port and returns its
// server end, without waiting for the client (see WaitConnected; a Write
// before then fills the ring, a Read waits). The server reads a ring of
// 2^readOrder bytes and writes one of 2^writeOrder bytes: orders from
// MinOrder to MaxOrder, two orders below 12 not equal (10 and 11 fit in
// the shared page, 12 and up take extra pages). ctx bounds the setup.
// Close removes the channel's keys.
func Server(ctx context.Context, xs *xenstore.Client, peer uint32, port int, readOrder, writeOrder int) (*Conn, error) {
	return server(ctx, xs, xenHyper{}, peer, port, layout{left: readOrder, right: writeOrder})
}

func server(ctx context.Context, xs *xenstore.Client, h hyper, peer uint32, port int, l layout) (c *Conn, err error) {
	me, err := ownDomid(ctx, xs)
	if err != nil {
		return nil, fmt.Errorf("vchan: server for domain %d port %d: %w", peer, port, err)
	}
	local, remote := Addr{Domid: me, Port: port}, Addr{Domid: peer, Port: port}
	defer func() {
		if err != nil {
			err = &net.OpError{Op: "listen", Net: "vchan", Source: local, Addr: remote, Err: err}
		}
	}()
	if port < 0 {
		return nil, fmt.Errorf("negative port %d", port)
	}
	if err := l.check(); err != nil {
		return nil, err
	}
	var u undo
	defer func() {
		if err != nil {
			err = errors.Join(err, u.run())
		}
	}()
	rel := &relay{}
	ev, err := h.bindUnbound(peer, rel)
	if err != nil {
		return nil, err
	}
	u.add(ev.close)
	hdr, err := h.share(peer, 1, true)
	if err != nil {
		return nil, err
	}
	u.add(hdr.close)
	if err := hdr.notifyOnUnmap(offSrvLive, ev.port()); err != nil {
		return nil, err
	}
	page := hdr.bytes()
	var grants []uint32
	ringMem := func(order int, writable bool) ([]byte, error) {
		if off := inPageOffset(order); off != 0 {
			return page[off : off+1<<order], nil
		}
		p, err := h.share(peer, ringPages(order), writable)
		if err != nil {
			return nil, err
		}
		u.add(p.close)
		grants = append(grants, p.refs()...)
		return p.bytes(), nil
	}
	// The client writes the left ring and only reads the right one.
	left, err := ringMem(l.left, true)
	if err != nil {
		return nil, err
	}
	right, err := ringMem(l.right, false)
	if err != nil {
		return nil, err
	}
	writeHeader(page, l, grants)
	base := KeyPath(me, peer, port)
	if err := publish(ctx, xs, base, me, peer, hdr.refs()[0], ev.port()); err != nil {
		return nil, err
	}
	u.add(func() error { return unpublish(xs, base) })
	c = newConn(local, remote, endpoint{server: true, page: page, left: left, right: right, kick: ev.notify, release: u.take(),
		published: fmt.Sprintf("grant %d, event channel %d", hdr.refs()[0], ev.port())})
	rel.c.Store(c)
	return c, nil
}

// publish writes the channel's keys, readable by the client only.
func publish(ctx context.Context, xs *xenstore.Client, base string, me, peer uint32, ref, port uint32) error {
	perms := xenstore.NewPerms(me, xenstore.AccessNone, xenstore.Perm{Domid: peer, Access: xenstore.AccessRead})
	err := xs.Transaction(ctx, func(tx *xenstore.Transaction) error {
		for _, kv := range [][2]string{
			{"ring-ref", strconv.FormatUint(uint64(ref), 10)},
			{"event-channel", strconv.FormatUint(uint64(port), 10)},
		} {
			if err := tx.WriteString(ctx, base+"/"+kv[0], kv[1]); err != nil {
				return err
			}
			if err := tx.SetPerms(ctx, base+"/"+kv[0], perms); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		return fmt.Errorf("publish the channel in xenstore at %s: %w", base, err)
	}
	return nil
}

// unpublish removes the channel's keys.
func unpublish(xs *xenstore.Client, base string) error {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := xs.Rm(ctx, base); err != nil && !errors.Is(err, syscall.ENOENT) {
		return fmt.Errorf("remove the channel's keys at %s: %w", base, err)
	}
	return nil
}

// Client connects to the channel that domain server published for us on
// port, waiting for it to be published if need be, until ctx ends.
func Client(ctx context.Context, xs *xenstore.Client, serverDomid uint32, port int) (*Conn, error) {
	return client(ctx, xs, xenHyper{}, serverDomid, port)
}

func client(ctx context.Context, xs *xenstore.Client, h hyper, srv uint32, port int) (c *Conn, err error) {
	me, err := ownDomid(ctx, xs)
	if err != nil {
		return nil, fmt.Errorf("vchan: client of domain %d port %d: %w", srv, port, err)
	}
	local, remote := Addr{Domid: me, Port: port}, Addr{Domid: srv, Port: port}
	defer func() {
		if err != nil {
			err = &net.OpError{Op: "dial", Net: "vchan", Source: local, Addr: remote, Err: err}
		}
	}()
	if port < 0 {
		return nil, fmt.Errorf("negative port %d", port)
	}
	ref, evport, err := waitKeys(ctx, xs, KeyPath(srv, me, port))
	if err != nil {
		return nil, err
	}
	var u undo
	defer func() {
		if err != nil {
			err = errors.Join(err, u.run())
		}
	}()
	rel := &relay{}
	ev, err := h.bindInterdomain(srv, evport, rel)
	if err != nil {
		return nil, err
	}
	u.add(ev.close)
	hdr, err := h.mapGrants(srv, []uint32{ref}, true)
	if err != nil {
		return nil, err
	}
	u.add(hdr.close)
	if err := hdr.notifyOnUnmap(offCliLive, ev.port()); err != nil {
		return nil, err
	}
	page := hdr.bytes()
	l, grants, err := readHeader(page)
	if err != nil {
		return nil, fmt.Errorf("the server's shared page: %w", err)
	}
	ringMem := func(order int, writable bool) ([]byte, error) {
		if off := inPageOffset(order); off != 0 {
			return page[off : off+1<<order], nil
		}
		n := ringPages(order)
		p, err := h.mapGrants(srv, grants[:n], writable)
		if err != nil {
			return nil, err
		}
		u.add(p.close)
		grants = grants[n:]
		if len(p.bytes()) != 1<<order {
			return nil, fmt.Errorf("mapped %d bytes for a ring of %d", len(p.bytes()), 1<<order)
		}
		return p.bytes(), nil
	}
	left, err := ringMem(l.left, true)
	if err != nil {
		return nil, err
	}
	right, err := ringMem(l.right, false)
	if err != nil {
		return nil, err
	}
	switch flags := atomic.LoadUint32(u32(page, offFlags)); {
	case uint8(flags>>shiftSrvLive) == liveGone:
		return nil, ErrPeerClosed
	case uint8(flags>>shiftCliLive) == liveUp:
		return nil, fmt.Errorf("another client is connected: %w", syscall.EBUSY)
	}
	c = newConn(local, remote, endpoint{server: false, page: page, left: left, right: right, kick: ev.notify, release: u.take()})
	rel.c.Store(c)
	if err := c.announce(); err != nil {
		return nil, errors.Join(fmt.Errorf("notify the server: %w", err), c.Close())
	}
	return c, nil
}

// waitKeys reads the channel's grant reference and event channel port
// under base, waiting (with a watch) until the server has written them
// and let us read them.
func waitKeys(ctx context.Context, xs *xenstore.Client, base string) (ref, port uint32, err error) {
	read := func() (bool, error) {
		var vals [2]uint32
		for i, k := range []string{"ring-ref", "event-channel"} {
			v, err := xs.ReadString(ctx, base+"/"+k)
			if errors.Is(err, syscall.ENOENT) || errors.Is(err, syscall.EACCES) {
				// Not there yet: a missing key below a directory we
				// may not read is EACCES.
				return false, nil
			}
			if err != nil {
				return false, err
			}
			n, err := strconv.ParseUint(v, 10, 32)
			if err == nil && n == 0 {
				err = errors.New("zero")
			}
			if err != nil {
				return false, fmt.Errorf("bad %s %q at %s: %w", k, v, base, err)
			}
			vals[i] = uint32(n)
		}
		ref, port = vals[0], vals[1]
		return true, nil
	}
	if ok, err := read(); ok || err != nil {
		return ref, port, err
	}
	w, err := xs.Watch(ctx, base)
	if err != nil {
		return 0, 0, fmt.Errorf("watch %s for the server: %w", base, err)
	}
	defer func() {
		uctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 10*time.Second)
		defer cancel()
		w.Unwatch(uctx)
	}()
	for {
		if ok, err := read(); ok || err != nil {
			return ref, port, err
		}
		select {
		case _, open := <-w.Events():
			if !open {
				return 0, 0, fmt.Errorf("watch %s for the server: %w", base, w.Err())
			}
		case <-ctx.Done():
			return 0, 0, fmt.Errorf("wait for the server to publish %s: %w", base, ctx.Err())
		}
	}
}
