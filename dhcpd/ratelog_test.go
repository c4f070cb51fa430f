package dhcpd

import (
	"bytes"
	"log/slog"
	"net"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/insomniacslk/dhcp/dhcpv4"
)

func TestPacketLogBudget(t *testing.T) {
	var b bytes.Buffer
	p := newPacketLog(slog.New(slog.NewTextHandler(&b, &slog.HandlerOptions{Level: slog.LevelInfo})), 3)
	var allowed int
	for i := range 10 {
		kind := eventUnknownMAC
		if i%2 == 1 {
			kind = eventMalformed
		}
		if p.Allow(slog.LevelInfo, kind) {
			allowed++
		}
	}
	if allowed != 3 {
		t.Errorf("%d events allowed in an interval, want the budget of 3", allowed)
	}
	// Below the logger's level: neither logged nor counted.
	if p.Allow(slog.LevelDebug, eventAnswered) {
		t.Error("a debug event was allowed by an info logger")
	}
	p.Flush()
	out := b.String()
	if strings.Count(out, "\n") != 1 || !strings.Contains(out, "not_logged=7") ||
		!strings.Contains(out, "unknown_mac=3") || !strings.Contains(out, "malformed=4") || strings.Contains(out, "answered") {
		t.Errorf("summary after 10 events with a budget of 3:\n%s", out)
	}
	b.Reset()
	if !p.Allow(slog.LevelInfo, eventNotForUs) {
		t.Error("no budget in the next interval")
	}
	p.Flush()
	if b.Len() != 0 {
		t.Errorf("summary of an interval within its budget: %q", b.String())
	}
}

// maxLogLine bounds one line of the responder's log (the longest are the
// seccomp line, a lease line and a summary).
const maxLogLine = 512

// TestFloodKeepsLogBounded floods a responder that logs at debug level,
// as a guest can, with packets it must drop (unknown MAC, malformed) and
// with requests it answers, over a real link: the log stays within the
// packet log's bound for the time the flood took, and its summary lines
// account for every packet not logged one by one.
func TestFloodKeepsLogBounded(t *testing.T) {
	l := newLink(t, testClientMAC)
	r := startResponder(t, l, helperConfig{Leases: []helperLease{qubesLease(testClientMAC)}})
	disc := request(t, dhcpv4.MessageTypeDiscover).ToBytes()
	unknown := append([]byte(nil), disc...)
	unknown[28+5] = 0x77 // last byte of chaddr
	badCookie := append([]byte(nil), disc...)
	badCookie[236] = 0
	bcast := func(payload []byte) []byte { return udpPacket(net.IPv4zero, net.IPv4bcast, 68, 67, payload) }
	const rounds = 30000
	start := time.Now()
	floodFrames(t, l.cliNS, l.cliIf, [][]byte{bcast(unknown), bcast(badCookie), bcast(disc)}, rounds)
	st := r.stop(t)
	elapsed := time.Since(start)
	log := r.stderr.String()
	t.Logf("%d frames sent in %v; stats %+v; %d bytes of log", 3*rounds, elapsed.Round(time.Millisecond), st, len(log))

	if st.Received < 1000 || st.UnknownMAC == 0 || st.Malformed == 0 || st.Offers == 0 {
		t.Fatalf("stats %+v: the flood did not reach the responder", st)
	}
	// Every interval that began while the flood ran (and the one the stop
	// ended) holds at most logBurst packet lines and a summary; the rest
	// is the start and stop lines and a lease line a minute.
	intervals := int(elapsed/logInterval) + 2
	bound := 4*maxLogLine + intervals*(logBurst+2)*maxLogLine
	if len(log) > bound {
		t.Errorf("%d bytes of log for %d packets in %v, want at most %d", len(log), st.Received, elapsed, bound)
	}
	if n := strings.Count(log, "\n"); n > 4+intervals*(logBurst+2) {
		t.Errorf("%d log lines, want at most %d", n, 4+intervals*(logBurst+2))
	}
	// What was not logged one by one is in the summaries.
	sum := func(key string) uint64 {
		var n uint64
		for _, m := range regexp.MustCompile(` `+key+`=(\d+)`).FindAllStringSubmatch(log, -1) {
			v, _ := strconv.ParseUint(m[1], 10, 64)
			n += v
		}
		return n
	}
	if !strings.Contains(log, "packet log rate limit") {
		t.Fatalf("no summary line in:\n%s", log)
	}
	for _, c := range []struct {
		key, detail string
		want        uint64
	}{
		{"unknown_mac", "unknown client MAC", st.UnknownMAC},
		{"malformed", `msg="no reply"`, st.Malformed},
		{"answered", `outcome=offer`, st.Offers},
	} {
		var detailed uint64
		for _, line := range strings.Split(log, "\n") {
			if strings.Contains(line, c.detail) && !strings.Contains(line, "packet log rate limit") &&
				(c.key != "malformed" || !strings.Contains(line, "unknown client MAC")) {
				detailed++
			}
		}
		if got := detailed + sum(c.key); got != c.want {
			t.Errorf("%s: %d lines + %d in summaries = %d, want the %d counted", c.key, detailed, sum(c.key), got, c.want)
		}
	}
	if t.Failed() || testing.Verbose() {
		t.Logf("log:\n%s", clip(log, 8192))
	}
}
