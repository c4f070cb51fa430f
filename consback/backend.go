package consback

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"strconv"
	"syscall"
	"time"

	"github.com/qvm-project/qvm/xendev"
	"github.com/qvm-project/qvm/xenstore"
)

// Xenbus states (xen/include/public/io/xenbus.h).
const (
	stateInitialised = 3
	stateConnected   = 4
	stateClosing     = 5
	stateClosed      = 6
)

// reservedConsoleRef is GNTTAB_RESERVED_CONSOLE, the grant reference
// under which the toolstack shares a PV domain's primary console page
// with the console backend's domain.
const reservedConsoleRef = 0

// maxValue bounds what is read of a xenstore value the domain wrote.
const maxValue = 32

// Console is one console of the domain to serve.
type Console struct {
	// Devid is the console's number: 0 is the primary console.
	Devid int
	// Out receives what the domain prints on it; nil discards it.
	Out io.Writer
	// In, if set, is read for what to type on the console: its bytes
	// go to the domain's input ring as the domain makes room.
	In io.Reader
	// Evtchn is the event channel device the console's port is bound
	// through, one per console (opened before the process gives up the
	// rights to open it). The caller closes it once Serve has returned.
	Evtchn *xendev.Evtchn
}

// Backend serves the consoles of one domain from dom0.
type Backend struct {
	XS     *xenstore.Client
	Gntdev *xendev.Gntdev
	Domid  uint32
	Log    *slog.Logger
}

// BackendDir is dom0's backend directory of console devid of domain domid,
// where libxl writes what it configured.
func BackendDir(domid uint32, devid int) string {
	return fmt.Sprintf("/local/domain/0/backend/console/%d/%d", domid, devid)
}

// frontendDir is the domain's side of console devid.
func frontendDir(domid uint32, devid int) string {
	if devid == 0 {
		return fmt.Sprintf("/local/domain/%d/console", domid)
	}
	return fmt.Sprintf("/local/domain/%d/device/console/%d", domid, devid)
}

// Serve serves console c until ctx ends or the domain closes it. The
// primary console is connected at once; a secondary one when its
// frontend has published its ring.
func (b *Backend) Serve(ctx context.Context, c Console) error {
	log := b.Log.With("console", c.Devid)
	fe := frontendDir(b.Domid, c.Devid)
	ref := uint32(reservedConsoleRef)
	var port uint64
	var err error
	if c.Devid == 0 {
		// libxl wrote the port, read-only to the domain, before it ran us.
		if port, err = b.readUint(ctx, fe+"/port"); err != nil {
			return err
		}
	} else {
		if err := b.waitFrontend(ctx, fe); err != nil {
			return err
		}
		r, err := b.readUint(ctx, fe+"/ring-ref")
		if err != nil {
			return err
		}
		ref = uint32(r)
		if port, err = b.readUint(ctx, fe+"/port"); err != nil {
			return err
		}
	}
	m, err := b.Gntdev.Map(b.Domid, []uint32{ref}, true)
	if err != nil {
		return fmt.Errorf("console %d of domain %d: %w", c.Devid, b.Domid, err)
	}
	defer m.Close()
	local, err := c.Evtchn.BindInterdomain(b.Domid, xendev.Port(port))
	if err != nil {
		return fmt.Errorf("console %d of domain %d: %w", c.Devid, b.Domid, err)
	}
	be := BackendDir(b.Domid, c.Devid)
	if err := b.XS.WriteString(ctx, be+"/state", strconv.Itoa(stateConnected)); err != nil {
		return fmt.Errorf("console %d of domain %d: %w", c.Devid, b.Domid, err)
	}
	log.Info("console connected", "ref", ref, "port", port)
	out := c.Out
	if out == nil {
		out = io.Discard
	}
	r := ring{page: m.Bytes()}
	if c.In != nil {
		ictx, stop := context.WithCancel(ctx)
		defer stop()
		go b.feed(ictx, log, r, c.Evtchn, local, c.In)
	}
	return b.pump(ctx, log, r, c.Evtchn, local, out)
}

// inputPoll is how often feed looks again at an input ring the domain
// has not made room in (console input is typed: it rarely fills 1 KiB).
const inputPoll = 20 * time.Millisecond

// feed copies what in gives to the domain's input ring until ctx ends
// or in does.
func (b *Backend) feed(ctx context.Context, log *slog.Logger, r ring, ev *xendev.Evtchn, local xendev.Port, in io.Reader) {
	buf := make([]byte, inSize)
	var lastCorrupt time.Time
	for ctx.Err() == nil {
		n, err := in.Read(buf)
		for p := buf[:n]; len(p) > 0 && ctx.Err() == nil; {
			w, werr := r.write(p)
			if werr != nil && time.Since(lastCorrupt) > time.Minute {
				lastCorrupt = time.Now()
				log.Warn("console input held", "err", werr)
			}
			if w > 0 {
				p = p[w:]
				if err := ev.Notify(local); err != nil {
					return
				}
				continue
			}
			select {
			case <-ctx.Done():
			case <-time.After(inputPoll):
			}
		}
		if err != nil {
			return
		}
	}
}

// pump moves output from the ring to out until ctx ends. A domain that
// corrupts its indices is logged at most once a minute.
func (b *Backend) pump(ctx context.Context, log *slog.Logger, r ring, ev *xendev.Evtchn, local xendev.Port, out io.Writer) error {
	buf := make([]byte, outSize)
	ports := make([]xendev.Port, 4)
	var lastCorrupt time.Time
	for {
		n, err := r.read(buf)
		if err != nil && time.Since(lastCorrupt) > time.Minute {
			lastCorrupt = time.Now()
			log.Warn("console output dropped", "err", err)
		}
		if n > 0 {
			if _, err := out.Write(buf[:n]); err != nil {
				return fmt.Errorf("console output of domain %d: %w", b.Domid, err)
			}
			// Room was made: the domain may be waiting to write more.
			if err := ev.Notify(local); err != nil {
				return err
			}
			continue
		}
		got, err := ev.Pending(ctx, ports)
		if err != nil {
			if ctx.Err() != nil {
				return nil
			}
			return err
		}
		if err := ev.Unmask(ports[:got]...); err != nil {
			return err
		}
	}
}

// waitFrontend waits until the secondary console's frontend has
// published its ring (state Initialised or Connected).
func (b *Backend) waitFrontend(ctx context.Context, fe string) error {
	w, err := b.XS.Watch(ctx, fe+"/state")
	if err != nil {
		return fmt.Errorf("watch %s: %w", fe, err)
	}
	defer w.Unwatch(context.WithoutCancel(ctx))
	for {
		st, err := b.readUint(ctx, fe+"/state")
		switch {
		case errors.Is(err, syscall.ENOENT):
		case err != nil:
			return err
		case st == stateInitialised || st == stateConnected:
			return nil
		case st >= stateClosing:
			return fmt.Errorf("console frontend %s closed before it connected (state %d)", fe, st)
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case _, ok := <-w.Events():
			if !ok {
				return fmt.Errorf("watch %s: %w", fe, w.Err())
			}
		}
	}
}

// readUint reads a decimal unsigned 32-bit value the domain (or libxl)
// wrote, refusing anything longer than maxValue bytes or not a number.
func (b *Backend) readUint(ctx context.Context, path string) (uint64, error) {
	v, err := b.XS.Read(ctx, path)
	if err != nil {
		return 0, fmt.Errorf("console of domain %d: %w", b.Domid, err)
	}
	if len(v) > maxValue {
		return 0, fmt.Errorf("console of domain %d: %s holds %d bytes, not a number", b.Domid, path, len(v))
	}
	n, err := strconv.ParseUint(string(v), 10, 32)
	if err != nil {
		return 0, fmt.Errorf("console of domain %d: %s is not a number", b.Domid, path)
	}
	return n, nil
}
