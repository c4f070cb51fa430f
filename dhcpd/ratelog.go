package dhcpd

import (
	"context"
	"log/slog"
	"sync"
	"time"
)

// Per-packet log lines are rate-limited at every level, so that no packet
// pattern a guest can send makes the log grow faster than a fixed bound:
// in each logInterval the first logBurst packet events are logged one by
// one, the rest are only counted, and one summary line with the counts
// closes the interval (at its end, or when the server stops). A line is
// at most a few hundred bytes (reasons are clipped to maxReasonLen), so a
// server logs at most about (logBurst+1) lines of packet events a minute,
// plus one lease line a minute per lease (see logEvery), whatever it
// receives.
const (
	logInterval  = time.Minute
	logBurst     = 10
	maxReasonLen = 160
	// maxPanicBytes bounds the packet a handler panic logs.
	maxPanicBytes = 256
)

// eventKind is what a packet event is, for the summary's counts.
type eventKind int

const (
	eventUnknownMAC eventKind = iota
	eventMalformed
	eventNotForUs
	eventSendFailed
	eventInterfaceDown
	eventPanic
	eventAnswered
	numEventKinds
)

var eventNames = [numEventKinds]string{
	eventUnknownMAC: "unknown_mac", eventMalformed: "malformed", eventNotForUs: "not_for_us",
	eventSendFailed: "send_failed", eventInterfaceDown: "interface_down", eventPanic: "panic",
	eventAnswered: "answered",
}

// packetLog keeps packet events within a budget per interval. Allow is
// called by the serve loop and Flush by its ticker, so it locks.
type packetLog struct {
	log   *slog.Logger
	burst int

	mu         sync.Mutex
	start      time.Time // when the interval began
	logged     int       // events logged one by one in this interval
	suppressed [numEventKinds]uint64
}

func newPacketLog(log *slog.Logger, burst int) *packetLog {
	return &packetLog{log: log, burst: burst, start: time.Now()}
}

// Allow reports whether an event of kind at level may be logged now, and
// counts it: as logged when the interval's budget allows, else as not
// logged. Events below the logger's level are neither logged nor
// counted. The caller logs the event when Allow says so; the check comes
// first so that events not logged cost no formatting.
func (p *packetLog) Allow(level slog.Level, kind eventKind) bool {
	if !p.log.Enabled(context.Background(), level) {
		return false
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.logged >= p.burst {
		p.suppressed[kind]++
		return false
	}
	p.logged++
	return true
}

// Flush ends the interval: when events were only counted in it, it logs
// one line with their numbers by kind. The next interval starts with a
// full budget.
func (p *packetLog) Flush() {
	p.mu.Lock()
	now := time.Now()
	var total uint64
	attrs := make([]any, 0, 2*numEventKinds+4)
	for k, n := range p.suppressed {
		if n > 0 {
			total += n
			attrs = append(attrs, eventNames[k], n)
		}
	}
	since := now.Sub(p.start).Round(time.Second)
	p.start, p.logged, p.suppressed = now, 0, [numEventKinds]uint64{}
	p.mu.Unlock()
	if total == 0 {
		return
	}
	attrs = append([]any{"not_logged", total, "in", since.String()}, attrs...)
	p.log.Info("packet log rate limit: packets not logged one by one", attrs...)
}

// run flushes every interval until ctx ends.
func (p *packetLog) run(ctx context.Context, interval time.Duration) {
	t := time.NewTicker(interval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
			p.Flush()
		}
	}
}

// clip shortens s to at most n bytes.
func clip(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return s[:n] + "..."
}
