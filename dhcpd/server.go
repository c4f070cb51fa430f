package dhcpd

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"sync/atomic"
	"syscall"
	"time"

	"golang.org/x/sys/unix"
)

// logEvery is how often a lease's routine events (lease given, renewed,
// declined) reach Info or Warn level; in between they are logged at Debug,
// within the packet log's budget (see logBurst), so a guest that floods
// requests cannot flood the log.
const logEvery = time.Minute

// Server answers DHCP on one interface for a fixed set of leases.
type Server struct {
	ifname   string
	serverIP net.IP
	leases   map[macKey]*entry
	log      *slog.Logger
	stats    counters
	ready    chan struct{}
	started  atomic.Bool

	// ParentDeathSignal, when not 0, is kept as the process's
	// parent-death signal through the sandbox's change of user (see
	// SandboxConfig.ParentDeathSignal). Set it before Serve.
	ParentDeathSignal syscall.Signal

	// lastLogged is when each lease last logged above Debug; only the
	// serve loop touches it.
	lastLogged map[macKey]time.Time
	// plog bounds the per-packet log lines (see logBurst).
	plog *packetLog

	// afterSandbox, when set (by tests), runs once the sandbox is on,
	// with the packet socket: it plays a compromised serve loop.
	afterSandbox func(*packetConn)
}

// counters are the Stats, updated by the serve loop and read by anyone.
type counters struct {
	received, offers, acks, renewals, naks, informs, releases, declines atomic.Uint64
	unknownMAC, malformed, notForUs, sendErrors                         atomic.Uint64
}

// Stats counts what the server has seen and done since it started.
type Stats struct {
	Received   uint64 // packets read from the interface
	Offers     uint64 // OFFERs sent
	Acks       uint64 // ACKs giving a lease (SELECTING, INIT-REBOOT)
	Renewals   uint64 // ACKs extending a lease (RENEWING, REBINDING)
	Naks       uint64 // NAKs sent
	Informs    uint64 // ACKs to INFORM
	Releases   uint64 // RELEASEs received
	Declines   uint64 // DECLINEs received (the address is used by another host)
	UnknownMAC uint64 // requests from MACs without a lease (no reply)
	Malformed  uint64 // malformed or oversized packets (no reply)
	NotForUs   uint64 // well-formed packets meant for another server (no reply)
	SendErrors uint64 // replies the kernel refused to send
}

// New makes a server for interface ifname that answers the given leases,
// one per MAC, identifying itself (option 54, and the source address of its
// replies) as serverIP; use the VM's gateway. It checks every lease and
// opens nothing: Serve does.
func New(ifname string, serverIP net.IP, leases []Lease, log *slog.Logger) (*Server, error) {
	if ifname == "" || len(ifname) >= unix.IFNAMSIZ {
		return nil, fmt.Errorf("dhcpd: interface name %q must be 1..%d characters", ifname, unix.IFNAMSIZ-1)
	}
	sid := ipv4(serverIP)
	if sid == nil || sid.IsUnspecified() || sid.Equal(net.IPv4bcast) || sid.IsMulticast() {
		return nil, fmt.Errorf("dhcpd on %s: server address %v is not a usable IPv4 address (use the VM's gateway)", ifname, serverIP)
	}
	if len(leases) == 0 {
		return nil, fmt.Errorf("dhcpd on %s: %w", ifname, errNoLeases)
	}
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	s := &Server{
		ifname:     ifname,
		serverIP:   sid,
		leases:     make(map[macKey]*entry, len(leases)),
		log:        log.With("interface", ifname),
		ready:      make(chan struct{}),
		lastLogged: make(map[macKey]time.Time, len(leases)),
	}
	s.plog = newPacketLog(s.log, logBurst)
	for _, l := range leases {
		e, err := newEntry(l)
		if err != nil {
			return nil, fmt.Errorf("dhcpd on %s: %w", ifname, err)
		}
		k, _ := keyOf(l.MAC)
		if _, dup := s.leases[k]; dup {
			return nil, fmt.Errorf("dhcpd on %s: MAC %s has two leases; give each VM one", ifname, l.MAC)
		}
		if e.lease.IP.Equal(sid) {
			return nil, fmt.Errorf("dhcpd on %s: lease %s uses the server's own address", ifname, l)
		}
		s.leases[k] = e
	}
	return s, nil
}

// Stats returns the counters so far; safe to call while Serve runs.
func (s *Server) Stats() Stats {
	c := &s.stats
	return Stats{
		Received: c.received.Load(), Offers: c.offers.Load(), Acks: c.acks.Load(),
		Renewals: c.renewals.Load(), Naks: c.naks.Load(), Informs: c.informs.Load(),
		Releases: c.releases.Load(), Declines: c.declines.Load(),
		UnknownMAC: c.unknownMAC.Load(), Malformed: c.malformed.Load(),
		NotForUs: c.notForUs.Load(), SendErrors: c.sendErrors.Load(),
	}
}

// Ready is closed once Serve has bound its sockets and sandboxed the
// process, so that requests are answered from then on.
func (s *Server) Ready() <-chan struct{} { return s.ready }

// Serve binds to the interface, sandboxes the whole process (see Sandbox:
// this is irreversible, so run one server per process and nothing else in
// it that needs privileges, files or other system calls afterwards) and
// answers requests until ctx is done. It returns nil when ctx ends it.
func (s *Server) Serve(ctx context.Context) error {
	if !s.started.CompareAndSwap(false, true) {
		return fmt.Errorf("dhcpd on %s: Serve called twice", s.ifname)
	}
	conn, err := listen(s.ifname, s.log)
	if err != nil {
		return err
	}
	defer conn.Close()
	if err := Sandbox(s.log, SandboxConfig{Ifindex: conn.ifindex, SendFD: conn.fd, ParentDeathSignal: s.ParentDeathSignal}); err != nil {
		return fmt.Errorf("dhcpd on %s: %w", s.ifname, err)
	}
	if s.afterSandbox != nil {
		s.afterSandbox(conn)
	}
	stop := context.AfterFunc(ctx, func() { conn.Close() })
	defer stop()
	tickCtx, stopTicks := context.WithCancel(ctx)
	go s.plog.run(tickCtx, logInterval)
	defer func() {
		stopTicks()
		s.plog.Flush()
	}()
	s.log.Info("dhcpd serving", "server_ip", s.serverIP, "leases", len(s.leases))
	close(s.ready)

	buf := make([]byte, maxPacket)
	for {
		n, from, err := conn.Read(buf)
		if err != nil {
			if ctx.Err() != nil {
				return nil
			}
			if errors.Is(err, unix.ENETDOWN) {
				// The interface went down; keep the socket, it comes back.
				if s.plog.Allow(slog.LevelInfo, eventInterfaceDown) {
					s.log.Info("interface down")
				}
				continue
			}
			return fmt.Errorf("dhcpd on %s: read: %w", s.ifname, err)
		}
		s.stats.received.Add(1)
		if n > len(buf) {
			s.stats.malformed.Add(1)
			if s.plog.Allow(slog.LevelInfo, eventMalformed) {
				s.log.Info("dropped oversized packet", "bytes", n, "from", from.String())
			}
			continue
		}
		resp, err := s.respond(buf[:n], from)
		s.account(resp, err, from)
		if resp.Packet == nil {
			continue
		}
		if err := conn.Write(resp.Packet, resp.To); err != nil {
			s.stats.sendErrors.Add(1)
			if s.plog.Allow(slog.LevelInfo, eventSendFailed) {
				s.log.Info("send failed", "client", resp.Client.String(), "to", resp.To.String(), "err", err)
			}
		}
	}
}

// respond is Respond with a last line of defence: a panic (a bug; the
// fuzz tests look for them) drops the packet and is logged, instead of
// taking the VM's network configuration down with the process.
func (s *Server) respond(pkt []byte, from net.HardwareAddr) (r Response, err error) {
	defer func() {
		if p := recover(); p != nil {
			r, err = Response{}, fmt.Errorf("%w: handler panic: %v", ErrMalformed, p)
			if s.plog.Allow(slog.LevelError, eventPanic) {
				s.log.Error("BUG: packet handler panicked; packet dropped", "panic", clip(fmt.Sprint(p), maxReasonLen),
					"packet", fmt.Sprintf("%x", pkt[:min(len(pkt), maxPanicBytes)]), "bytes", len(pkt))
			}
		}
	}()
	return s.Respond(pkt, from)
}

// account counts and logs the result of one packet.
func (s *Server) account(r Response, err error, from net.HardwareAddr) {
	c := &s.stats
	if err != nil {
		kind := eventMalformed
		switch {
		case errors.Is(err, ErrUnknownMAC):
			c.unknownMAC.Add(1)
			kind = eventUnknownMAC
		case errors.Is(err, ErrNotForUs):
			c.notForUs.Add(1)
			kind = eventNotForUs
		default:
			c.malformed.Add(1)
		}
		if s.plog.Allow(slog.LevelInfo, kind) {
			s.log.Info("no reply", "from", from.String(), "reason", clip(err.Error(), maxReasonLen))
		}
		return
	}
	switch r.Outcome {
	case Offered:
		c.offers.Add(1)
	case Acked:
		c.acks.Add(1)
	case Renewed:
		c.renewals.Add(1)
	case Naked:
		c.naks.Add(1)
	case Informed:
		c.informs.Add(1)
	case Released:
		c.releases.Add(1)
	case Declined:
		c.declines.Add(1)
	}
	level := slog.LevelDebug
	switch r.Outcome {
	case Acked, Renewed, Declined:
		if k, ok := keyOf(r.Client); ok && s.lastLogged != nil {
			now := time.Now()
			if last, seen := s.lastLogged[k]; !seen || now.Sub(last) >= logEvery {
				s.lastLogged[k] = now
				level = slog.LevelInfo
				if r.Outcome == Declined {
					level = slog.LevelWarn
				}
			}
		}
	}
	if level == slog.LevelDebug {
		// Routine: within the packet log's budget.
		if !s.plog.Allow(level, eventAnswered) {
			return
		}
	} else if !s.log.Enabled(context.Background(), level) {
		return
	}
	attrs := []any{"client", r.Client.String(), "outcome", r.Outcome.String()}
	if r.Lease != nil {
		attrs = append(attrs, "ip", r.Lease.IP, "netmask", net.IP(r.Lease.Netmask), "gateway", r.Lease.Gateway, "lease", r.Lease.Duration)
	}
	msg := "lease given"
	switch r.Outcome {
	case Declined:
		msg = "client declined its address: another host on the link uses it"
	case Offered, Naked, Informed, Released:
		msg = "answered " + r.Type.String()
	}
	s.log.Log(context.Background(), level, msg, attrs...)
}
