// Command xenstore-bench compares ways of publishing one VM's key set into
// xenstore, against one private C xenstored (fake hypervisor, see package
// xenstoretest), in one run:
//
//   - c-tool: the C xenstore-write, one process per key, as shell
//     toolstacks do;
//   - go-seq: a plain Go loop, one Write per key, each waiting for its reply;
//   - go-tx:  qubesdb.Publish, one transaction whose requests are all in
//     flight together (it also clears the directory and sets its
//     permissions, which the other two do not count).
//
// It then measures reads per second of one client, and prints the CPU time
// the daemon and the client side spend per publish.
//
// What bounds go-tx: on a socket, C xenstored (4.17) handles one request
// per turn of its poll loop and writes each reply's header and body in two
// separate turns, so every request costs it about six system calls (two
// polls, two reads, two writes) whether or not the client pipelines. A
// pipelined transaction therefore runs at the daemon's own speed (about as
// much daemon CPU as the sequential loop, roughly 9-11 us per request
// here), plus the two round trips that start and commit it; pipelining
// removes the client's wake-ups and the daemon's idle gaps, not the
// daemon's work. The last line is:
//
//	xenstore: publish c-tool A ms go-seq B ms go-tx C ms ratio B/C reads D/s
package main

import (
	"bytes"
	"context"
	"errors"
	"flag"
	"fmt"
	"os"
	"os/exec"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/qvm-project/qvm/qubesdb"
	"github.com/qvm-project/qvm/xenstore"
	"github.com/qvm-project/qvm/xenstore/xenstoretest"
)

func main() {
	rounds := flag.Int("rounds", 15, "rounds; each runs every method several times")
	flag.Parse()
	if err := run(*rounds); err != nil {
		fmt.Fprintln(os.Stderr, "xenstore-bench:", err)
		os.Exit(1)
	}
}

// info is a networked AppVM with IPv6 and the usual services.
func info() qubesdb.Info {
	return qubesdb.Info{
		Name: "work", Type: "AppVM", DefaultUser: "user", BaseTemplate: "fedora-41",
		Timezone: "Europe/Warsaw",
		Net: &qubesdb.Net{
			MAC: "00:16:3e:5e:6c:7a", IP: "10.137.0.122", Netmask: "255.255.255.255",
			Gateway: "10.137.0.1", PrimaryDNS: "10.139.1.1", SecondaryDNS: "10.139.1.2",
			IP6: "fd09:24ef:4179::a89:7a", Gateway6: "fd09:24ef:4179::a89:1",
		},
		Services: map[string]bool{
			"cups": true, "crond": false, "qubes-update-check": true, "meminfo-writer": true,
			"clocksync": false, "network-manager": false, "qubes-firewall": false,
			"qubes-network": false, "updates-proxy-setup": true, "qubes-updates-proxy": false,
			"software-rendering": false,
		},
	}
}

// stats summarises durations of one publish.
type stats struct{ d []time.Duration }

func (s *stats) add(d time.Duration) { s.d = append(s.d, d) }
func (s *stats) median() time.Duration {
	d := slices.Clone(s.d)
	slices.Sort(d)
	return d[len(d)/2]
}
func (s *stats) min() time.Duration { return slices.Min(s.d) }
func (s *stats) mean() time.Duration {
	var t time.Duration
	for _, d := range s.d {
		t += d
	}
	return t / time.Duration(len(s.d))
}
func ms(d time.Duration) float64 { return float64(d) / float64(time.Millisecond) }

func run(rounds int) error {
	tool, err := exec.LookPath("xenstore-write")
	if err != nil {
		return fmt.Errorf("xenstore-write not found (apt-get install xenstore-utils): %w", err)
	}
	preload, err := xenstoretest.FakeXenPath()
	if err != nil {
		return err
	}
	d, err := xenstoretest.Launch(preload)
	if err != nil {
		return err
	}
	defer d.Close()
	ctx := context.Background()
	c, err := xenstore.Open(ctx, xenstore.Config{Path: d.Socket})
	if err != nil {
		return err
	}
	defer c.Close()

	const domid = 5
	keys, err := qubesdb.Keys(info())
	if err != nil {
		return err
	}
	dir := qubesdb.Path(domid)
	names := slices.Sorted(func(yield func(string) bool) {
		for k := range keys {
			if !yield(k) {
				return
			}
		}
	})
	fmt.Printf("daemon: %s -N (pid %d), fake hypervisor %s\n", xenstoretest.XenstoredPath, d.Pid(), preload)
	fmt.Printf("key set: %d keys of a networked AppVM under %s\n", len(keys), dir)

	// fresh empties the directory (untimed) so every method creates the
	// same nodes, with the permissions the keys inherit from it.
	fresh := func() error {
		if err := c.Rm(ctx, dir); err != nil && !xenstoreNotFound(err) {
			return err
		}
		if err := c.Mkdir(ctx, dir); err != nil {
			return err
		}
		return c.SetPerms(ctx, dir, qubesdb.Perms(domid))
	}
	cTool := func() error {
		for _, k := range names {
			cmd := exec.Command(tool, dir+"/"+k, keys[k])
			cmd.Env = d.Env()
			if out, err := cmd.CombinedOutput(); err != nil {
				return fmt.Errorf("xenstore-write: %s: %w", out, err)
			}
		}
		return nil
	}
	goSeq := func() error {
		for _, k := range names {
			if err := c.WriteString(ctx, dir+"/"+k, keys[k]); err != nil {
				return err
			}
		}
		return nil
	}
	goTx := func() error { return qubesdb.Publish(ctx, c, domid, keys) }

	methods := []struct {
		name  string
		fn    func() error
		per   int // runs per round
		stats stats
	}{
		{"c-tool", cTool, 2, stats{}},
		{"go-seq", goSeq, 30, stats{}},
		{"go-tx", goTx, 30, stats{}},
	}
	// Warm up (process cache, daemon allocations, Go runtime).
	for i := range methods {
		for range 3 {
			if err := fresh(); err != nil {
				return err
			}
			if err := methods[i].fn(); err != nil {
				return fmt.Errorf("%s: %w", methods[i].name, err)
			}
		}
	}
	// Interleaved rounds, so that load from elsewhere on the machine
	// falls on every method alike.
	for range rounds {
		for i := range methods {
			m := &methods[i]
			for range m.per {
				if err := fresh(); err != nil {
					return err
				}
				start := time.Now()
				if err := m.fn(); err != nil {
					return fmt.Errorf("%s: %w", m.name, err)
				}
				m.stats.add(time.Since(start))
			}
		}
	}
	// Every method wrote the same values.
	for _, k := range names {
		v, err := c.ReadString(ctx, dir+"/"+k)
		if err != nil || v != keys[k] {
			return fmt.Errorf("check %s: %q, %v", k, v, err)
		}
	}
	for _, m := range methods {
		fmt.Printf("publish %-7s %4d runs: median %8.3f ms  min %8.3f ms  mean %8.3f ms  (%.1f us/key)\n",
			m.name, len(m.stats.d), ms(m.stats.median()), ms(m.stats.min()), ms(m.stats.mean()),
			float64(m.stats.median().Microseconds())/float64(len(keys)))
	}

	// Where the time goes: CPU of the daemon and of our side (this
	// process, or the xenstore-write processes) per publish, measured
	// over back-to-back runs.
	for i := range methods {
		m := &methods[i]
		n := m.per * 4
		d0, err := procCPU(d.Pid())
		if err != nil {
			return err
		}
		self0, kids0 := rusage()
		start := time.Now()
		for range n {
			if err := m.fn(); err != nil {
				return err
			}
		}
		wall := time.Since(start)
		d1, _ := procCPU(d.Pid())
		self1, kids1 := rusage()
		fmt.Printf("cpu     %-7s per publish: wall %7.3f ms, xenstored %7.3f ms, client %7.3f ms\n",
			m.name, ms(wall/time.Duration(n)), ms((d1-d0)/time.Duration(n)),
			ms((self1-self0+kids1-kids0)/time.Duration(n)))
	}

	// Reads per second of one client.
	seqRate, err := readRate(ctx, c, dir, names, 1, 1)
	if err != nil {
		return err
	}
	batchRate, err := readRate(ctx, c, dir, names, 1, 100)
	if err != nil {
		return err
	}
	concRate, err := readRate(ctx, c, dir, names, 16, 1)
	if err != nil {
		return err
	}
	fmt.Printf("reads/s of one client: sequential %.0f, 16 goroutines %.0f, batches of 100 %.0f\n", seqRate, concRate, batchRate)

	a, b, cc := methods[0].stats.median(), methods[1].stats.median(), methods[2].stats.median()
	fmt.Printf("c-tool/go-tx %.0fx\n", float64(a)/float64(cc))
	fmt.Printf("xenstore: publish c-tool %.3f ms go-seq %.3f ms go-tx %.3f ms ratio %.2f reads %.0f/s\n",
		ms(a), ms(b), ms(cc), float64(b)/float64(cc), max(batchRate, concRate))
	return nil
}

func xenstoreNotFound(err error) bool {
	return err != nil && (os.IsNotExist(err) || isENOENT(err))
}

// readRate measures reads/s for about a second, with workers goroutines
// each sending batches of batch reads.
func readRate(ctx context.Context, c *xenstore.Client, dir string, names []string, workers, batch int) (float64, error) {
	const span = time.Second
	var (
		mu    sync.Mutex
		total int
		first error
		wg    sync.WaitGroup
	)
	start := time.Now()
	for w := range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			n := 0
			vals := make([][]byte, batch)
			for i := w; time.Since(start) < span; {
				if batch == 1 {
					if _, err := c.Read(ctx, dir+"/"+names[i%len(names)]); err != nil {
						mu.Lock()
						first = err
						mu.Unlock()
						return
					}
					i++
					n++
					continue
				}
				b := c.Batch()
				for j := range batch {
					b.Read(dir+"/"+names[(i+j)%len(names)], &vals[j])
				}
				if err := b.Run(ctx); err != nil {
					mu.Lock()
					first = err
					mu.Unlock()
					return
				}
				i += batch
				n += batch
			}
			mu.Lock()
			total += n
			mu.Unlock()
		}()
	}
	wg.Wait()
	return float64(total) / time.Since(start).Seconds(), first
}

func isENOENT(err error) bool { return errors.Is(err, syscall.ENOENT) }

// procCPU returns the CPU time (user+system) a process has used.
func procCPU(pid int) (time.Duration, error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return 0, err
	}
	// Fields after the command name, which is in parentheses.
	f := strings.Fields(string(b[bytes.LastIndexByte(b, ')')+1:]))
	if len(f) < 13 {
		return 0, fmt.Errorf("/proc/%d/stat: too few fields", pid)
	}
	u, _ := strconv.ParseInt(f[11], 10, 64)
	st, _ := strconv.ParseInt(f[12], 10, 64)
	return time.Duration(u+st) * time.Second / 100, nil // USER_HZ is 100 on Linux
}

// rusage returns the CPU time of this process and of its waited-for
// children.
func rusage() (self, children time.Duration) {
	var s, c syscall.Rusage
	syscall.Getrusage(syscall.RUSAGE_SELF, &s)
	syscall.Getrusage(syscall.RUSAGE_CHILDREN, &c)
	tv := func(r syscall.Rusage) time.Duration {
		return time.Duration(r.Utime.Nano() + r.Stime.Nano())
	}
	return tv(s), tv(c)
}
