//go:build cgo

package xl

/*
#include "qvm_libxl.h"
*/
import "C"

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"os/signal"
	"runtime/cgo"
	"sync"
	"syscall"
	"time"
	"unsafe"
)

// domidInvalid is Xen's DOMID_INVALID.
const domidInvalid = 0x7FF4

// Context is an open libxl context: one per process is enough, and it is
// safe for concurrent use. Close it when done.
type Context struct {
	ctx    *C.libxl_ctx
	lg     *C.xentoollog_logger
	cb     *callbacks
	handle cgo.Handle
	sysfs  string
	// recheck is how often a deathWatch asks for the domain's state
	// itself (deathRecheck; tests shorten it).
	recheck time.Duration
	// beforeDestroy (SetBeforeDestroy) runs before libxl destroys a
	// domain, with the domain and its stubdomain.
	beforeDestroy func(domids []uint32)

	stopR, stopW *os.File // wakes the event loop to stop
	loopDone     chan struct{}
	sigch        chan os.Signal
	sigDone      chan struct{}

	closeOnce sync.Once
}

// callbacks is the Go side that C calls back into (log, events).
type callbacks struct {
	log *slog.Logger

	mu      sync.Mutex
	next    uint64
	waiters map[uint64]chan domEvent
	broken  bool
}

// domEvent is a libxl event for a waiter; kind -1 means the event
// machinery failed or the Context was closed.
type domEvent struct {
	kind   int // libxl_event_type
	domid  uint32
	token  uint64
	detail int // Xen's shutdown code (DOMAIN_SHUTDOWN) or the libxl rc (OPERATION_COMPLETE)
}

const (
	evDomainShutdown    = 1 // LIBXL_EVENT_TYPE_DOMAIN_SHUTDOWN
	evDomainDeath       = 2 // LIBXL_EVENT_TYPE_DOMAIN_DEATH
	evOperationComplete = 4 // LIBXL_EVENT_TYPE_OPERATION_COMPLETE
)

func (cb *callbacks) register() (uint64, chan domEvent) {
	cb.mu.Lock()
	defer cb.mu.Unlock()
	cb.next++
	ch := make(chan domEvent, 8)
	cb.waiters[cb.next] = ch
	if cb.broken {
		ch <- domEvent{kind: -1} // no event will ever come: fail the wait
	}
	return cb.next, ch
}

func (cb *callbacks) unregister(token uint64) {
	cb.mu.Lock()
	defer cb.mu.Unlock()
	delete(cb.waiters, token)
}

func (cb *callbacks) deliver(ev domEvent) {
	cb.mu.Lock()
	ch := cb.waiters[ev.token]
	cb.mu.Unlock()
	if ch == nil {
		return
	}
	select {
	case ch <- ev:
	default:
		cb.log.Warn("libxl event dropped: waiter is not reading", "domid", ev.domid, "type", ev.kind)
	}
}

func (cb *callbacks) disaster() {
	cb.mu.Lock()
	defer cb.mu.Unlock()
	cb.broken = true
	for _, ch := range cb.waiters {
		select {
		case ch <- domEvent{kind: -1}:
		default:
		}
	}
}

// libxlErr wraps a libxl return code.
func libxlErr(op string, rc C.int) error {
	if rc == 0 {
		return nil
	}
	return &Error{Op: op, Code: int(rc), Name: C.GoString(C.libxl_error_to_string(C.libxl_error(rc)))}
}

func libxlDomErr(op string, domid uint32, rc C.int) error {
	if rc == 0 {
		return nil
	}
	return &Error{Op: op, Domain: domid, HasDom: true, Code: int(rc), Name: C.GoString(C.libxl_error_to_string(C.libxl_error(rc)))}
}

// Open opens a libxl context (libxl_ctx_alloc) with libxl's log going to
// logger (slog.Default() if nil). It fails on a machine that is not the
// dom0 of a running Xen.
func Open(ctx context.Context, logger *slog.Logger) (*Context, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	if logger == nil {
		logger = slog.Default()
	}
	cb := &callbacks{log: logger.With("component", "libxl"), waiters: map[uint64]chan domEvent{}}
	h := cgo.NewHandle(cb)
	lg := C.qvm_logger_new(C.uintptr_t(h), C.int(xtlMinLevel(cb.log)))
	if lg == nil {
		h.Delete()
		return nil, errors.New("libxl logger: out of memory")
	}
	var lctx *C.libxl_ctx
	if rc := C.qvm_ctx_open(&lctx, lg, C.uintptr_t(h)); rc != 0 {
		C.qvm_logger_free(lg)
		h.Delete()
		err := libxlErr("libxl_ctx_alloc", rc)
		if _, serr := os.Stat("/proc/xen/capabilities"); serr != nil {
			return nil, fmt.Errorf("open libxl: this machine is not running under Xen, or xenfs is not mounted on /proc/xen (%v): %w", serr, err)
		}
		return nil, fmt.Errorf("open libxl: is this dom0 with xenstored running? %w", err)
	}
	c := &Context{ctx: lctx, lg: lg, cb: cb, handle: h, sysfs: "/sys", recheck: deathRecheck}

	r, w, err := os.Pipe()
	if err != nil {
		C.libxl_ctx_free(lctx)
		C.qvm_logger_free(lg)
		h.Delete()
		return nil, fmt.Errorf("open libxl: event loop pipe: %w", err)
	}
	c.stopR, c.stopW = r, w
	c.loopDone = make(chan struct{})
	go func() {
		defer close(c.loopDone)
		if rc := C.qvm_event_loop(c.ctx, C.int(r.Fd())); rc != 0 {
			cb.log.Error("libxl event loop stopped", "err", libxlErr("libxl_osevent_beforepoll", rc))
			cb.disaster()
		}
	}()

	c.sigch = make(chan os.Signal, 1)
	c.sigDone = make(chan struct{})
	signal.Notify(c.sigch, syscall.SIGCHLD)
	go func() {
		defer close(c.sigDone)
		for range c.sigch {
			C.libxl_childproc_sigchld_occurred(c.ctx)
		}
	}()
	return c, nil
}

// Close stops the event loop and frees the libxl context. Call it only
// when no other call on c is running.
func (c *Context) Close() error {
	c.closeOnce.Do(func() {
		_, _ = c.stopW.Write([]byte{1})
		<-c.loopDone
		signal.Stop(c.sigch)
		close(c.sigch)
		<-c.sigDone
		C.libxl_ctx_free(c.ctx)
		C.qvm_logger_free(c.lg)
		c.stopR.Close()
		c.stopW.Close()
		c.cb.disaster() // wake any waiter: the context is gone
		c.handle.Delete()
	})
	return nil
}

// Create creates the domain described by cfg and unpauses it, returning
// its domid. On failure nothing is left behind: a partly built domain is
// destroyed. Unless a PCI device has NoStrictReset, devices without a
// reset method are refused first (see CheckPCIReset). Cancelling ctx
// aborts the creation (libxl_ao_abort) and destroys what was built.
func (c *Context) Create(ctx context.Context, cfg *DomainConfig) (uint32, error) {
	domid, err := c.CreatePaused(ctx, cfg)
	if err != nil {
		return 0, err
	}
	if rc := C.libxl_domain_unpause(c.ctx, C.uint32_t(domid), nil); rc != 0 {
		err := fmt.Errorf("create domain %s: %w", cfg.Name, libxlDomErr("libxl_domain_unpause", domid, rc))
		if derr := c.destroyIfPresent(domid); derr != nil {
			return 0, errors.Join(err, fmt.Errorf("clean up domain %d: %w", domid, derr))
		}
		return 0, err
	}
	c.cb.log.Info("domain created", "domain", cfg.Name, "domid", domid)
	return domid, nil
}

// CreatePaused is Create without the final unpause: the domain is built
// and stays paused, so that the toolstack can publish what the guest
// reads at boot (its xenstore keys) before it runs. Unpause starts it; on
// failure nothing is left behind, as for Create.
func (c *Context) CreatePaused(ctx context.Context, cfg *DomainConfig) (uint32, error) {
	if err := ctx.Err(); err != nil {
		return 0, err
	}
	if err := cfg.Validate(); err != nil {
		return 0, err
	}
	for _, p := range cfg.PCIDevices {
		if !p.NoStrictReset {
			if err := CheckPCIReset(c.sysfs, p.Addr); err != nil {
				return 0, fmt.Errorf("domain %s: %w", cfg.Name, err)
			}
		}
	}
	cc, err := newCConfig(cfg)
	if err != nil {
		return 0, err
	}
	defer C.qvm_config_free(cc)
	// libxl writes the domid while the operation runs: C memory.
	domidp := (*C.uint32_t)(C.malloc(C.size_t(unsafe.Sizeof(C.uint32_t(0)))))
	defer C.free(unsafe.Pointer(domidp))
	*domidp = domidInvalid

	// cc and *domidp stay in use until the operation has completed, which
	// finish waits for (it runs before the frees above).
	op := c.newAsyncOp()
	defer op.finish()
	op.started(C.qvm_create_async(c.ctx, cc, domidp, C.uint64_t(op.token)))
	rc, werr := op.wait(ctx)
	if werr != nil {
		op.finish()
		err := fmt.Errorf("create domain %s: %w", cfg.Name, werr)
		if id := uint32(*domidp); id != domidInvalid && id != 0 {
			if derr := c.destroyIfPresent(id); derr != nil {
				return 0, errors.Join(err, fmt.Errorf("clean up half-created domain %d: %w", id, derr))
			}
		}
		return 0, err
	}
	domid := *domidp
	if rc != 0 {
		err := fmt.Errorf("create domain %s: %w", cfg.Name, libxlErr("libxl_domain_create_new", rc))
		if domid != domidInvalid && domid != 0 {
			if derr := c.destroyIfPresent(uint32(domid)); derr != nil {
				return 0, errors.Join(err, fmt.Errorf("clean up half-created domain %d: %w", domid, derr))
			}
		}
		return 0, err
	}
	c.cb.log.Info("domain created paused", "domain", cfg.Name, "domid", uint32(domid))
	return uint32(domid), nil
}

// destroyIfPresent destroys domid if it exists.
func (c *Context) destroyIfPresent(domid uint32) error {
	if err := c.destroy(domid); err != nil && !errors.Is(err, ErrNoDomain) {
		return err
	}
	return nil
}

// SetBeforeDestroy has f run before each destroy (Destroy, and the one
// WaitDeath does), with the domain's ID and its stubdomain's if it has
// one: for what libxl leaves to others, such as backends in driver
// domains. Call it before the Context is used.
func (c *Context) SetBeforeDestroy(f func(domids []uint32)) { c.beforeDestroy = f }

func (c *Context) destroy(domid uint32) error {
	if _, err := c.info(domid); err != nil {
		return err
	}
	if c.beforeDestroy != nil {
		ids := []uint32{domid}
		if stub := C.libxl_get_stubdom_id(c.ctx, C.int(domid)); stub > 0 {
			ids = append(ids, uint32(stub))
		}
		c.beforeDestroy(ids)
	}
	return libxlDomErr("libxl_domain_destroy", domid, C.libxl_domain_destroy(c.ctx, C.uint32_t(domid), nil))
}

// Destroy kills domid at once (and its stubdomain), like `xl destroy`.
func (c *Context) Destroy(ctx context.Context, domid uint32) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	if err := c.destroy(domid); err != nil {
		return fmt.Errorf("destroy domain %d: %w", domid, err)
	}
	return nil
}

// Pause pauses domid and, if it has one, its device-model stubdomain.
func (c *Context) Pause(ctx context.Context, domid uint32) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	if rc := C.libxl_domain_pause(c.ctx, C.uint32_t(domid), nil); rc != 0 {
		return fmt.Errorf("pause domain %d: %w", domid, libxlDomErr("libxl_domain_pause", domid, rc))
	}
	if stub := C.libxl_get_stubdom_id(c.ctx, C.int(domid)); stub > 0 {
		if rc := C.libxl_domain_pause(c.ctx, C.uint32_t(stub), nil); rc != 0 {
			return fmt.Errorf("pause stubdomain %d of domain %d: %w", stub, domid, libxlDomErr("libxl_domain_pause", uint32(stub), rc))
		}
	}
	return nil
}

// Unpause resumes domid's stubdomain, if any and paused, then domid.
// (libxl creates a domain paused but starts its stubdomain running; Xen
// refuses to unpause a domain that is not paused.)
func (c *Context) Unpause(ctx context.Context, domid uint32) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	if stub := C.libxl_get_stubdom_id(c.ctx, C.int(domid)); stub > 0 {
		si, err := c.info(uint32(stub))
		if err != nil {
			return fmt.Errorf("stubdomain %d of domain %d: %w", stub, domid, err)
		}
		if si.State == StatePaused {
			if rc := C.libxl_domain_unpause(c.ctx, C.uint32_t(stub), nil); rc != 0 {
				return fmt.Errorf("unpause stubdomain %d of domain %d: %w", stub, domid, libxlDomErr("libxl_domain_unpause", uint32(stub), rc))
			}
		}
	}
	if rc := C.libxl_domain_unpause(c.ctx, C.uint32_t(domid), nil); rc != 0 {
		return fmt.Errorf("unpause domain %d: %w", domid, libxlDomErr("libxl_domain_unpause", domid, rc))
	}
	return nil
}

// domainInfo converts a libxl_dominfo.
func (c *Context) domainInfo(di *C.libxl_dominfo) DomainInfo {
	d := DomainInfo{
		ID:            uint32(di.domid),
		Type:          goDomainType(di.domain_type),
		CurrentMemKiB: uint64(di.current_memkb),
		MaxMemKiB:     uint64(di.max_memkb),
		VCPUsOnline:   int(di.vcpu_online),
		CPUTimeNs:     uint64(di.cpu_time),
	}
	C.qvm_uuid_get(&di.uuid, (*C.uchar)(unsafe.Pointer(&d.UUID[0])))
	switch {
	case bool(di.dying):
		d.State = StateDying
	case bool(di.shutdown):
		d.State = StateShutdown
		d.ShutdownReason = shutdownReasonFromXen(int(di.shutdown_reason))
		d.shutdownCode = int(di.shutdown_reason)
	case bool(di.paused):
		d.State = StatePaused
	case bool(di.running):
		d.State = StateRunning
	default:
		d.State = StateBlocked
	}
	if name := C.libxl_domid_to_name(c.ctx, di.domid); name != nil {
		d.Name = C.GoString(name)
		C.free(unsafe.Pointer(name))
	}
	return d
}

func (c *Context) info(domid uint32) (DomainInfo, error) {
	var di C.libxl_dominfo
	C.libxl_dominfo_init(&di)
	defer C.libxl_dominfo_dispose(&di)
	if rc := C.libxl_domain_info(c.ctx, &di, C.uint32_t(domid)); rc != 0 {
		return DomainInfo{}, libxlDomErr("libxl_domain_info", domid, rc)
	}
	return c.domainInfo(&di), nil
}

// DomainInfo reports on domid; the error wraps ErrNoDomain when it does
// not exist.
func (c *Context) DomainInfo(ctx context.Context, domid uint32) (DomainInfo, error) {
	if err := ctx.Err(); err != nil {
		return DomainInfo{}, err
	}
	d, err := c.info(domid)
	if err != nil {
		return DomainInfo{}, fmt.Errorf("domain %d: %w", domid, err)
	}
	return d, nil
}

// DomainID returns the domid of the domain called name; the error wraps
// ErrNoDomain when there is none.
func (c *Context) DomainID(ctx context.Context, name string) (uint32, error) {
	if err := ctx.Err(); err != nil {
		return 0, err
	}
	cn := C.CString(name)
	defer C.free(unsafe.Pointer(cn))
	var domid C.uint32_t
	if rc := C.libxl_name_to_domid(c.ctx, cn, &domid); rc != 0 {
		return 0, fmt.Errorf("domain %s: %w", name, ErrNoDomain)
	}
	return uint32(domid), nil
}

// List reports every domain, dom0 and stubdomains included, by domid.
func (c *Context) List(ctx context.Context) ([]DomainInfo, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	var n C.int
	list := C.libxl_list_domain(c.ctx, &n)
	if list == nil {
		return nil, errors.New("list domains: libxl_list_domain failed (see the log)")
	}
	defer C.libxl_dominfo_list_free(list, n)
	infos := unsafe.Slice(list, int(n))
	out := make([]DomainInfo, 0, len(infos))
	for i := range infos {
		out = append(out, c.domainInfo(&infos[i]))
	}
	return out, nil
}

// PhysInfo reports on the host (libxl_get_physinfo, `xl info`).
func (c *Context) PhysInfo(ctx context.Context) (PhysInfo, error) {
	if err := ctx.Err(); err != nil {
		return PhysInfo{}, err
	}
	var pi C.libxl_physinfo
	C.libxl_physinfo_init(&pi)
	defer C.libxl_physinfo_dispose(&pi)
	if rc := C.libxl_get_physinfo(c.ctx, &pi); rc != 0 {
		return PhysInfo{}, fmt.Errorf("host info: %w", libxlErr("libxl_get_physinfo", rc))
	}
	const pageKiB = 4
	return PhysInfo{
		CPUs:           int(pi.nr_cpus),
		ThreadsPerCore: int(pi.threads_per_core),
		CoresPerSocket: int(pi.cores_per_socket),
		NUMANodes:      int(pi.nr_nodes),
		CPUkHz:         uint32(pi.cpu_khz),
		TotalMemKiB:    uint64(pi.total_pages) * pageKiB,
		FreeMemKiB:     uint64(pi.free_pages) * pageKiB,
		CapPV:          bool(pi.cap_pv),
		CapHVM:         bool(pi.cap_hvm),
		CapHAP:         bool(pi.cap_hap),
		CapShadow:      bool(pi.cap_shadow),
		CapHVMDirectIO: bool(pi.cap_hvm_directio),
	}, nil
}

// CheckType returns a clear error (wrapping ErrNoHVM for HVM and PVH on a
// host without VT-x/AMD-V) when this host cannot run a domain of type t.
func (c *Context) CheckType(ctx context.Context, t DomainType) error {
	pi, err := c.PhysInfo(ctx)
	if err != nil {
		return err
	}
	return pi.CheckType(t)
}

// CDROMInsert puts the image target into the CD-ROM drive vdev of the
// running HVM domain domid (libxl_cdrom_insert). See Disk.CDROM for a
// limitation with drives that started empty.
func (c *Context) CDROMInsert(ctx context.Context, domid uint32, vdev, target string) error {
	if target == "" {
		return fmt.Errorf("domain %d: insert into %s: no image given (use CDROMEject to empty the drive)", domid, vdev)
	}
	return c.cdrom(ctx, domid, Disk{Vdev: vdev, Target: target, CDROM: true})
}

// CDROMEject empties the CD-ROM drive vdev of the running HVM domain domid
// (libxl_cdrom_insert with an empty medium, like `xl cd-eject`).
func (c *Context) CDROMEject(ctx context.Context, domid uint32, vdev string) error {
	return c.cdrom(ctx, domid, Disk{Vdev: vdev, CDROM: true})
}

func (c *Context) cdrom(ctx context.Context, domid uint32, d Disk) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	if err := d.validate(HVM); err != nil {
		return fmt.Errorf("domain %d: CD-ROM %s: %w", domid, d.Vdev, err)
	}
	if d.Target != "" {
		if _, err := os.Stat(d.Target); err != nil {
			return fmt.Errorf("domain %d: CD-ROM %s: %w", domid, d.Vdev, err)
		}
	}
	var cd C.libxl_device_disk
	fillDisk(&cd, &d)
	defer C.libxl_device_disk_dispose(&cd)
	if rc := C.libxl_cdrom_insert(c.ctx, C.uint32_t(domid), &cd, nil); rc != 0 {
		return fmt.Errorf("domain %d: CD-ROM %s: %w", domid, d.Vdev, libxlDomErr("libxl_cdrom_insert", domid, rc))
	}
	return nil
}

// deathWatch follows one domain's shutdown and death events.
type deathWatch struct {
	c     *Context
	token uint64
	ch    chan domEvent
	evg   *C.libxl_evgen_domain_death
	domid uint32
	// shutdownSeen: the shutdown was reported (by libxl or the recheck).
	shutdownSeen bool
}

func (c *Context) watchDeath(domid uint32) (*deathWatch, error) {
	token, ch := c.cb.register()
	w := &deathWatch{c: c, token: token, ch: ch, domid: domid}
	if rc := C.libxl_evenable_domain_death(c.ctx, C.uint32_t(domid), C.libxl_ev_user(token), &w.evg); rc != 0 {
		c.cb.unregister(token)
		return nil, fmt.Errorf("domain %d: %w", domid, libxlDomErr("libxl_evenable_domain_death", domid, rc))
	}
	return w, nil
}

func (w *deathWatch) close() {
	C.libxl_evdisable_domain_death(w.c.ctx, w.evg)
	w.c.cb.unregister(w.token)
}

// deathRecheck is how often a waiting deathWatch also asks for the
// domain's state itself. The check makes a wait end even if an event were
// missed (seen in a process whose only libxl call was the watch itself:
// the guest's shutdown went unreported until some other libxl call ran).
// It may also see a shutdown before libxl reports it (under emulation
// libxl's event came half a second later): next reports each shutdown
// once.
const deathRecheck = 2 * time.Second

// next waits for the domain's next event: shutdown (with its reason) or
// death. The shutdown is reported once, whether libxl's event or the
// recheck saw it first.
func (w *deathWatch) next(ctx context.Context) (domEvent, error) {
	tick := time.NewTicker(w.c.recheck)
	defer tick.Stop()
	for {
		select {
		case ev := <-w.ch:
			if ev.kind < 0 {
				return ev, errors.New("libxl event handling failed or the context was closed (see the log)")
			}
			if ev.kind == evDomainShutdown {
				if w.shutdownSeen {
					continue // the recheck reported it already
				}
				w.shutdownSeen = true
			}
			return ev, nil
		case <-tick.C:
			d, err := w.c.info(w.domid)
			switch {
			case errors.Is(err, ErrNoDomain):
				return domEvent{kind: evDomainDeath, domid: w.domid, token: w.token}, nil
			case err == nil && d.State == StateShutdown && !w.shutdownSeen:
				w.shutdownSeen = true
				return domEvent{kind: evDomainShutdown, domid: w.domid, token: w.token, detail: d.shutdownCode}, nil
			}
		case <-ctx.Done():
			return domEvent{}, ctx.Err()
		}
	}
}

// WaitDeath waits until domid is gone. When it shuts down first (the
// guest powered off, rebooted or crashed), WaitDeath destroys it, which is
// the toolstack's part of on_poweroff/on_reboot/on_crash "destroy"; the
// reason is returned, or ReasonDestroyed when it was destroyed without
// shutting down. Cancelling ctx stops the wait and leaves the domain be.
func (c *Context) WaitDeath(ctx context.Context, domid uint32) (ShutdownReason, error) {
	w, err := c.watchDeath(domid)
	if err != nil {
		return "", err
	}
	defer w.close()
	reason := ReasonDestroyed
	for {
		ev, err := w.next(ctx)
		if err != nil {
			return "", fmt.Errorf("wait for domain %d to die: %w", domid, err)
		}
		switch ev.kind {
		case evDomainShutdown:
			reason = shutdownReasonFromXen(ev.detail)
			c.cb.log.Info("domain shut down, destroying it", "domid", domid, "reason", string(reason))
			if err := c.destroyIfPresent(domid); err != nil {
				return reason, fmt.Errorf("domain %d shut down (%s) but destroying it failed: %w", domid, reason, err)
			}
		case evDomainDeath:
			return reason, nil
		}
	}
}

// shutdownAckWait is how long RequestShutdown waits for the guest to take
// the request before leaving it to the guest.
const shutdownAckWait = 2 * time.Second

// RequestShutdown asks domid to shut down (PV control node, or the ACPI
// power button for an HVM domain without PV drivers) and returns without
// waiting for it to go; whoever waits for its death (WaitDeath) destroys
// it once it has shut down. It waits briefly for the guest to take the
// request, then leaves the request in place.
func (c *Context) RequestShutdown(ctx context.Context, domid uint32) error {
	if _, err := c.info(domid); err != nil {
		return fmt.Errorf("shut down domain %d: %w", domid, err)
	}
	op := c.newAsyncOp()
	defer op.finish()
	rc := C.qvm_shutdown_async(c.ctx, C.uint32_t(domid), C.uint64_t(op.token))
	switch {
	case rc == errNoParavirt:
		if rc := C.libxl_send_trigger(c.ctx, C.uint32_t(domid), C.LIBXL_TRIGGER_POWER, 0, nil); rc != 0 {
			return fmt.Errorf("shut down domain %d: %w", domid, libxlDomErr("libxl_send_trigger(power)", domid, rc))
		}
		return nil
	case rc != 0:
		return fmt.Errorf("shut down domain %d: %w", domid, libxlDomErr("libxl_domain_shutdown", domid, rc))
	}
	op.pending = true
	wctx, cancel := context.WithTimeout(ctx, shutdownAckWait)
	defer cancel()
	if rc, err := op.wait(wctx); err == nil && rc != 0 {
		c.cb.log.Warn("guest did not acknowledge the shutdown request", "domid", domid, "err", libxlDomErr("libxl_domain_shutdown", domid, rc))
	}
	return nil
}

// Shutdown asks domid to shut down (PV control node, or the ACPI power
// button for an HVM domain without PV drivers), waits up to timeout for it
// to do so, then destroys it either way and waits until it is gone.
// forced reports whether it had to be killed.
func (c *Context) Shutdown(ctx context.Context, domid uint32, timeout time.Duration) (forced bool, err error) {
	w, err := c.watchDeath(domid)
	if err != nil {
		return false, fmt.Errorf("shut down domain %d: %w", domid, err)
	}
	defer w.close()

	// libxl_domain_shutdown waits up to a minute for the guest to
	// acknowledge the request; run it asynchronously so that timeout,
	// not libxl, decides how long the guest gets.
	op := c.newAsyncOp()
	defer op.finish()
	rc := C.qvm_shutdown_async(c.ctx, C.uint32_t(domid), C.uint64_t(op.token))
	switch {
	case rc == errNoParavirt:
		rc = C.libxl_send_trigger(c.ctx, C.uint32_t(domid), C.LIBXL_TRIGGER_POWER, 0, nil)
		if rc != 0 {
			return false, fmt.Errorf("shut down domain %d: %w", domid, libxlDomErr("libxl_send_trigger(power)", domid, rc))
		}
	case rc != 0:
		return false, fmt.Errorf("shut down domain %d: %w", domid, libxlDomErr("libxl_domain_shutdown", domid, rc))
	default:
		op.pending = true
	}

	timer := time.NewTimer(timeout)
	defer timer.Stop()
	gone := false
wait:
	for {
		select {
		case ev := <-w.ch:
			if ev.kind < 0 {
				return false, fmt.Errorf("shut down domain %d: libxl event handling failed or the context was closed (see the log)", domid)
			}
			gone = ev.kind == evDomainDeath
			break wait
		case ev := <-op.ch:
			op.handle(ev)
			if !op.pending && op.rc != 0 {
				c.cb.log.Warn("guest did not acknowledge the shutdown request", "domid", domid, "err", libxlDomErr("libxl_domain_shutdown", domid, op.rc))
			}
		case <-timer.C:
			c.cb.log.Warn("domain did not shut down in time, destroying it", "domid", domid, "timeout", timeout)
			forced = true
			break wait
		case <-ctx.Done():
			return false, fmt.Errorf("shut down domain %d: %w", domid, ctx.Err())
		}
	}
	op.finish()
	if !gone {
		if err := c.destroyIfPresent(domid); err != nil {
			return forced, fmt.Errorf("shut down domain %d: %w", domid, err)
		}
		for !gone {
			ev, err := w.next(ctx)
			if err != nil {
				return forced, fmt.Errorf("shut down domain %d: wait for it to go: %w", domid, err)
			}
			gone = ev.kind == evDomainDeath
		}
	}
	return forced, nil
}

// asyncOp is a libxl asynchronous operation started with the how of
// qvm_how(token): its completion arrives as an OPERATION_COMPLETE event.
type asyncOp struct {
	c       *Context
	token   uint64
	ch      chan domEvent
	pending bool  // started and not completed
	rc      C.int // the operation's result once completed
	done    bool  // finish has run
}

func (c *Context) newAsyncOp() *asyncOp {
	token, ch := c.cb.register()
	return &asyncOp{c: c, token: token, ch: ch}
}

// started records what the start function returned: 0 means the
// operation is in progress, anything else that it failed at once.
func (op *asyncOp) started(rc C.int) {
	if rc == 0 {
		op.pending = true
	} else {
		op.rc = rc
	}
}

func (op *asyncOp) handle(ev domEvent) {
	switch {
	case ev.kind == evOperationComplete:
		op.pending, op.rc = false, C.int(ev.detail)
	case ev.kind < 0:
		op.pending, op.rc = false, errFail
	}
}

// wait waits for the operation to complete and returns its result. If
// ctx is cancelled first it asks libxl to abort the operation and returns
// ctx's error; finish then waits for the end.
func (op *asyncOp) wait(ctx context.Context) (C.int, error) {
	for op.pending {
		select {
		case ev := <-op.ch:
			op.handle(ev)
		case <-ctx.Done():
			return op.rc, ctx.Err()
		}
	}
	return op.rc, nil
}

// finish aborts the operation if it is still running and waits until it
// has completed: libxl uses the memory it was given until then.
func (op *asyncOp) finish() {
	if op.done {
		return
	}
	op.done = true
	if op.pending {
		if rc := C.qvm_ao_abort(op.c.ctx, C.uint64_t(op.token)); rc != 0 && rc != -23 /* NOTFOUND: completing */ {
			op.c.cb.log.Warn("libxl_ao_abort failed; waiting for the operation to end", "err", libxlErr("libxl_ao_abort", rc))
		}
		for op.pending {
			op.handle(<-op.ch)
		}
	}
	op.c.cb.unregister(op.token)
}
