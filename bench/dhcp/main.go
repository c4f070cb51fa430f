// Command dhcp benchmarks qvm's DHCP responder (package dhcpd) against
// dnsmasq, side by side in one run on the same veth pair.
//
// It makes two network namespaces joined by a veth pair, a list of 1,000
// static MAC-to-address leases, and then, at rising request rates, runs
// perfdhcp (Debian's kea-admin package) in the client namespace against
// each server in turn in the server namespace: qvm's responder (this
// program re-executed in serve mode, sandboxed as in production) and
// dnsmasq with the same hosts (--leasefile-ro, --quiet-dhcp). For each
// server it prints the highest rate with no lost exchange, the average and
// 99th percentile exchange latency (DISCOVER-OFFER and REQUEST-ACK round
// trips, from perfdhcp's per-packet timestamps) at that rate, and the peak
// resident memory (VmHWM). The last line is the summary:
//
//	dhcp: qvm R1/s dnsmasq R2/s ratio X p99 Y ms rss Z MiB
//
// Run it as root: `make bench-dhcp`. It deletes its namespaces when it
// ends, also on error or SIGINT/SIGTERM.
package main

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"log/slog"
	"net"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/qvm-project/qvm/dhcpd"
)

const (
	leaseCount = 1000
	serverAddr = "198.18.0.1" // RFC 2544 benchmarking range, only inside our namespaces
	clientAddr = "198.18.255.254"
	prefixLen  = 16
	serveEnv   = "QVM_BENCH_DHCP_SERVE" // JSON serveConfig: run as the qvm responder
	readyLine  = "QVM-DHCPD-READY"
)

type serveConfig struct {
	Interface string
	Leases    []benchLease
}

type benchLease struct{ MAC, IP string }

func main() {
	if cfg := os.Getenv(serveEnv); cfg != "" {
		os.Exit(serve(cfg))
	}
	ratesFlag := flag.String("rates", "500,1000,1500,2000,3000,4000,5000,6000,8000,10000,12000,15000", "exchange rates to try, rising, comma-separated")
	period := flag.Duration("period", 5*time.Second, "length of one perfdhcp run")
	flag.Parse()
	var rates []int
	for _, s := range strings.Split(*ratesFlag, ",") {
		r, err := strconv.Atoi(strings.TrimSpace(s))
		if err != nil || r <= 0 {
			fmt.Fprintf(os.Stderr, "bench-dhcp: bad rate %q in -rates\n", s)
			os.Exit(2)
		}
		rates = append(rates, r)
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	err := run(ctx, rates, *period)
	stop()
	if err != nil {
		fmt.Fprintln(os.Stderr, "bench-dhcp:", err)
		os.Exit(1)
	}
}

// serve is the qvm side: dhcpd with all leases, until SIGTERM.
func serve(cfgJSON string) int {
	var cfg serveConfig
	if err := json.Unmarshal([]byte(cfgJSON), &cfg); err != nil {
		fmt.Fprintln(os.Stderr, "serve config:", err)
		return 2
	}
	leases := make([]dhcpd.Lease, 0, len(cfg.Leases))
	for _, l := range cfg.Leases {
		mac, err := dhcpd.ParseMAC(l.MAC)
		if err != nil {
			fmt.Fprintln(os.Stderr, err)
			return 2
		}
		leases = append(leases, dhcpd.Lease{
			MAC: mac, IP: net.ParseIP(l.IP), Netmask: net.CIDRMask(prefixLen, 32), Gateway: net.ParseIP(serverAddr),
			DNS: []net.IP{net.IPv4(10, 139, 1, 1), net.IPv4(10, 139, 1, 2)}, Duration: time.Hour,
		})
	}
	log := slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelWarn}))
	s, err := dhcpd.New(cfg.Interface, net.ParseIP(serverAddr), leases, log)
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM)
	defer stop()
	go func() {
		<-s.Ready()
		fmt.Println(readyLine)
	}()
	if err := s.Serve(ctx); err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	return 0
}

// netLink is the veth pair between the two namespaces.
type netLink struct{ srvNS, cliNS, srvIf, cliIf string }

func ip(args ...string) error {
	out, err := exec.Command("ip", args...).CombinedOutput()
	if err != nil {
		return fmt.Errorf("ip %s: %v: %s", strings.Join(args, " "), err, strings.TrimSpace(string(out)))
	}
	return nil
}

// setup makes the namespaces; cleanup deletes whatever was made.
func setup() (*netLink, func(), error) {
	id := fmt.Sprintf("%x", os.Getpid()&0xffffff)
	l := &netLink{srvNS: "qvmbench-dhcp-" + id + "-s", cliNS: "qvmbench-dhcp-" + id + "-c", srvIf: "qb" + id + "s", cliIf: "qb" + id + "c"}
	var made []string
	cleanup := func() {
		for _, ns := range made {
			ip("netns", "del", ns)
		}
	}
	for _, ns := range []string{l.srvNS, l.cliNS} {
		if err := ip("netns", "add", ns); err != nil {
			cleanup()
			return nil, nil, err
		}
		made = append(made, ns)
	}
	steps := [][]string{
		{"-n", l.srvNS, "link", "set", "lo", "up"},
		{"-n", l.cliNS, "link", "set", "lo", "up"},
		{"link", "add", l.srvIf, "netns", l.srvNS, "type", "veth", "peer", "name", l.cliIf, "netns", l.cliNS},
		{"-n", l.srvNS, "addr", "add", fmt.Sprintf("%s/%d", serverAddr, prefixLen), "dev", l.srvIf},
		{"-n", l.cliNS, "addr", "add", fmt.Sprintf("%s/%d", clientAddr, prefixLen), "dev", l.cliIf},
		{"-n", l.srvNS, "link", "set", l.srvIf, "up"},
		{"-n", l.cliNS, "link", "set", l.cliIf, "up"},
	}
	for _, s := range steps {
		if err := ip(s...); err != nil {
			cleanup()
			return nil, nil, err
		}
	}
	return l, cleanup, nil
}

// server is one DHCP server under test.
type server struct {
	name  string
	start func(ctx context.Context) (*exec.Cmd, error) // returns once it answers
	best  trial                                        // highest lossless trial
	hwm   int64                                        // peak RSS over all trials, KiB
	lossy int                                          // consecutive lossy rates
}

// trial is one perfdhcp run.
type trial struct {
	rate      int     // requested exchanges/s
	achieved  float64 // 4-way exchanges/s perfdhcp reached
	sent      int
	drops     int
	delaysMs  []float64 // every DISCOVER-OFFER and REQUEST-ACK round trip
	avg, p99  float64
	completed bool
}

func run(ctx context.Context, rates []int, period time.Duration) error {
	if os.Geteuid() != 0 {
		return errors.New("needs root (network namespaces)")
	}
	for _, tool := range []string{"ip", "dnsmasq", "perfdhcp"} {
		if _, err := exec.LookPath(tool); err != nil {
			return fmt.Errorf("%s not found: run `make deps` (packages iproute2, dnsmasq-base, kea-admin)", tool)
		}
	}
	l, cleanup, err := setup()
	if err != nil {
		return err
	}
	defer cleanup()
	dir, err := os.MkdirTemp("", "qvm-bench-dhcp-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(dir)

	var leases []benchLease
	var macs, hosts strings.Builder
	for i := 0; i < leaseCount; i++ {
		mac := fmt.Sprintf("02:00:00:00:%02x:%02x", i>>8, i&0xff)
		addr := fmt.Sprintf("198.18.%d.%d", 1+i>>8, i&0xff)
		leases = append(leases, benchLease{MAC: mac, IP: addr})
		fmt.Fprintln(&macs, mac)
		fmt.Fprintf(&hosts, "%s,%s\n", mac, addr)
	}
	macFile := filepath.Join(dir, "macs.txt")
	hostsFile := filepath.Join(dir, "hosts")
	if err := os.WriteFile(macFile, []byte(macs.String()), 0o644); err != nil {
		return err
	}
	if err := os.WriteFile(hostsFile, []byte(hosts.String()), 0o644); err != nil {
		return err
	}
	exe, err := os.Executable()
	if err != nil {
		return err
	}
	cfg, _ := json.Marshal(serveConfig{Interface: l.srvIf, Leases: leases})

	qvm := &server{name: "qvm", start: func(ctx context.Context) (*exec.Cmd, error) {
		cmd := exec.CommandContext(ctx, "ip", "netns", "exec", l.srvNS, exe)
		cmd.Env = append(os.Environ(), serveEnv+"="+string(cfg))
		cmd.Stderr = os.Stderr
		out, err := cmd.StdoutPipe()
		if err != nil {
			return nil, err
		}
		if err := cmd.Start(); err != nil {
			return nil, err
		}
		line, err := bufio.NewReader(out).ReadString('\n')
		if strings.TrimSpace(line) != readyLine {
			stopServer(cmd)
			return nil, fmt.Errorf("qvm responder did not start: %q %v", line, err)
		}
		return cmd, nil
	}}
	dnsmasq := &server{name: "dnsmasq", start: func(ctx context.Context) (*exec.Cmd, error) {
		cmd := exec.CommandContext(ctx, "ip", "netns", "exec", l.srvNS, "dnsmasq", "--no-daemon", "--port=0",
			"--interface="+l.srvIf, "--bind-interfaces", "--dhcp-range=198.18.0.0,static,255.255.0.0",
			"--dhcp-hostsfile="+hostsFile, "--leasefile-ro", "--quiet-dhcp", "--log-facility=-",
			"--pid-file=", "--dhcp-option=option:dns-server,10.139.1.1,10.139.1.2")
		if err := cmd.Start(); err != nil {
			return nil, err
		}
		// dnsmasq has no ready signal: probe until it answers.
		for i := 0; i < 50; i++ {
			if t, err := perfdhcp(ctx, l, macFile, 0, 0); err == nil && t.drops == 0 && t.sent > 0 {
				return cmd, nil
			}
			if ctx.Err() != nil {
				break
			}
			time.Sleep(100 * time.Millisecond)
		}
		stopServer(cmd)
		return nil, errors.New("dnsmasq did not answer")
	}}
	servers := []*server{qvm, dnsmasq}

	fmt.Printf("%-8s %8s %10s %8s %9s %9s %9s\n", "server", "rate", "achieved", "drops", "avg ms", "p99 ms", "rss MiB")
	for _, rate := range rates {
		for _, s := range servers {
			if s.lossy >= 2 {
				continue
			}
			if ctx.Err() != nil {
				return ctx.Err()
			}
			// A lossy run is tried once more: the machine is shared.
			var t trial
			for try := 0; try < 2; try++ {
				t, err = runTrial(ctx, s, l, macFile, rate, period)
				if err != nil {
					return fmt.Errorf("%s at %d/s: %w", s.name, rate, err)
				}
				if t.drops == 0 {
					break
				}
			}
			fmt.Printf("%-8s %8d %10.0f %8d %9.3f %9.3f %9.1f\n", s.name, rate, t.achieved, t.drops, t.avg, t.p99, float64(s.hwm)/1024)
			if t.drops == 0 && t.completed {
				s.lossy = 0
				if t.achieved > s.best.achieved {
					s.best = t
				}
			} else {
				s.lossy++
			}
		}
	}
	fmt.Println()
	for _, s := range servers {
		fmt.Printf("%s: highest rate without loss %.0f/s (asked %d/s); at it avg %.3f ms, p99 %.3f ms; peak RSS %.1f MiB\n",
			s.name, s.best.achieved, s.best.rate, s.best.avg, s.best.p99, float64(s.hwm)/1024)
	}
	ratio := 0.0
	if dnsmasq.best.achieved > 0 {
		ratio = qvm.best.achieved / dnsmasq.best.achieved
	}
	fmt.Printf("dhcp: qvm %.0f/s dnsmasq %.0f/s ratio %.2f p99 %.3f ms rss %.1f MiB\n",
		qvm.best.achieved, dnsmasq.best.achieved, ratio, qvm.best.p99, float64(qvm.hwm)/1024)
	return nil
}

// runTrial starts the server, loads it at rate for period, records its
// peak RSS and stops it.
func runTrial(ctx context.Context, s *server, l *netLink, macFile string, rate int, period time.Duration) (trial, error) {
	cmd, err := s.start(ctx)
	if err != nil {
		return trial{}, err
	}
	defer stopServer(cmd)
	t, err := perfdhcp(ctx, l, macFile, rate, period)
	if err != nil {
		return t, err
	}
	if hwm := peakRSS(cmd.Process.Pid); hwm > s.hwm {
		s.hwm = hwm
	}
	return t, nil
}

func stopServer(cmd *exec.Cmd) {
	cmd.Process.Signal(syscall.SIGTERM)
	done := make(chan struct{})
	go func() { cmd.Wait(); close(done) }()
	select {
	case <-done:
	case <-time.After(5 * time.Second):
		cmd.Process.Kill()
		<-done
	}
}

// peakRSS is VmHWM of pid in KiB (`ip netns exec` execs the server, so
// the pid is the server's).
func peakRSS(pid int) int64 {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return 0
	}
	for _, line := range strings.Split(string(b), "\n") {
		if v, ok := strings.CutPrefix(line, "VmHWM:"); ok {
			n, _ := strconv.ParseInt(strings.TrimSuffix(strings.TrimSpace(v), " kB"), 10, 64)
			return n
		}
	}
	return 0
}

// perfdhcp runs one load test from the client namespace; rate 0 is a
// probe of a few exchanges.
func perfdhcp(ctx context.Context, l *netLink, macFile string, rate int, period time.Duration) (trial, error) {
	args := []string{"netns", "exec", l.cliNS, "perfdhcp", "-4", "-l", l.cliIf, "-M", macFile, "-R", strconv.Itoa(leaseCount), "-W", "500000"}
	if rate == 0 {
		args = append(args, "-n", "3", "-r", "100", "-d", "0.2")
	} else {
		args = append(args, "-r", strconv.Itoa(rate), "-p", fmt.Sprintf("%.0f", period.Seconds()), "-x", "t")
	}
	cmd := exec.CommandContext(ctx, "ip", args...)
	out, err := cmd.Output()
	var ee *exec.ExitError
	if err != nil && !(errors.As(err, &ee) && ee.ExitCode() == 3) { // 3: some exchanges failed
		return trial{}, fmt.Errorf("perfdhcp: %v\n%s", err, out)
	}
	t := parsePerfdhcp(string(out))
	t.rate = rate
	return t, nil
}

// parsePerfdhcp reads perfdhcp's report: the achieved rate, per-exchange
// counts and drops, and with -x t the send/receive time of every
// completed exchange.
func parsePerfdhcp(out string) trial {
	var t trial
	for _, line := range strings.Split(out, "\n") {
		line = strings.TrimSpace(line)
		switch {
		case strings.HasPrefix(line, "Rate:"):
			f := strings.Fields(line)
			if len(f) > 1 {
				t.achieved, _ = strconv.ParseFloat(f[1], 64)
			}
			t.completed = true
		case strings.HasPrefix(line, "sent packets:"):
			n, _ := strconv.Atoi(strings.TrimSpace(strings.TrimPrefix(line, "sent packets:")))
			t.sent += n
		case strings.HasPrefix(line, "drops:"):
			n, _ := strconv.Atoi(strings.TrimSpace(strings.TrimPrefix(line, "drops:")))
			t.drops += n
		case strings.HasPrefix(line, "sent / received:"):
			f := strings.Fields(strings.TrimPrefix(line, "sent / received:"))
			if len(f) == 3 {
				a, err1 := strconv.ParseFloat(f[0], 64)
				b, err2 := strconv.ParseFloat(f[2], 64)
				if err1 == nil && err2 == nil && b >= a {
					t.delaysMs = append(t.delaysMs, (b-a)*1000)
				}
			}
		}
	}
	if n := len(t.delaysMs); n > 0 {
		sum := 0.0
		for _, d := range t.delaysMs {
			sum += d
		}
		t.avg = sum / float64(n)
		s := slices.Clone(t.delaysMs)
		slices.Sort(s)
		t.p99 = s[min(n-1, (n*99+99)/100-1)]
	}
	return t
}
