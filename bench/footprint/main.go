// Command footprint is `make bench-footprint`: inside the nested Xen of the
// test bed (one boot, one run) it starts 8 VMs with qvm-start and counts
// the dom0 processes they leave running (each VM's monitor and DHCP
// responder) and their resident memory, then does the same for 8
// identical domains made with `xl create` (the xl.cfg each VM's
// `qvm-start --dry-run` prints; xl leaves a process per domain that
// watches it). A process counts when it appeared after the baseline
// taken just before the starts and is alive once every domain runs. The
// last line reads:
//
//	footprint: qvm A MiB/vm B procs/vm xl C MiB/vm D procs/vm
package main

import (
	"bufio"
	"bytes"
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/qvm-project/qvm/bench/bedbench"
	"github.com/qvm-project/qvm/loopdev"
)

// count is how many VMs run at once.
const count = 8

func main() {
	inside := flag.Bool("inside", false, "measure (in dom0)")
	flag.Parse()
	if *inside {
		if err := measure(); err != nil {
			fmt.Fprintf(os.Stderr, "bench-footprint: %v\n", err)
			os.Exit(1)
		}
		return
	}
	os.Exit(bedbench.Host("bench-footprint", nil, regexp.MustCompile(`(?m)^footprint: .*$`)))
}

// proc is one user-space process of dom0.
type proc struct {
	pid      int
	cmd      string
	rssKiB   int
	pssKiB   int
	kthread  bool
	selfTree bool
}

// procs lists dom0's processes; kernel threads and this benchmark's own
// process tree are marked.
func procs() (map[int]proc, error) {
	ents, err := os.ReadDir("/proc")
	if err != nil {
		return nil, err
	}
	self := os.Getpid()
	parent := map[int]int{}
	out := map[int]proc{}
	for _, e := range ents {
		pid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		status, err := os.ReadFile(filepath.Join("/proc", e.Name(), "status"))
		if err != nil {
			continue // gone meanwhile
		}
		cmdline, _ := os.ReadFile(filepath.Join("/proc", e.Name(), "cmdline"))
		p := proc{pid: pid, kthread: len(cmdline) == 0}
		p.cmd = strings.Join(strings.Fields(string(bytes.ReplaceAll(cmdline, []byte{0}, []byte{' '}))), " ")
		sc := bufio.NewScanner(bytes.NewReader(status))
		for sc.Scan() {
			k, v, _ := strings.Cut(sc.Text(), ":")
			f := strings.Fields(v)
			if len(f) == 0 {
				continue
			}
			switch k {
			case "PPid":
				parent[pid], _ = strconv.Atoi(f[0])
			case "VmRSS":
				p.rssKiB, _ = strconv.Atoi(f[0])
			}
		}
		if r, err := os.ReadFile(filepath.Join("/proc", e.Name(), "smaps_rollup")); err == nil {
			for _, l := range strings.Split(string(r), "\n") {
				if f := strings.Fields(l); len(f) >= 2 && f[0] == "Pss:" {
					p.pssKiB, _ = strconv.Atoi(f[1])
				}
			}
		}
		out[pid] = p
	}
	for pid, p := range out {
		for q, n := pid, 0; q > 1 && n < 64; q, n = parent[q], n+1 {
			if q == self {
				p.selfTree = true
				out[pid] = p
				break
			}
		}
	}
	return out, nil
}

// newProcs returns the user-space processes in now that are not in base,
// nor in this benchmark's own tree, sorted by command.
func newProcs(base, now map[int]proc) []proc {
	var n []proc
	for pid, p := range now {
		if _, old := base[pid]; old || p.kthread || p.selfTree {
			continue
		}
		n = append(n, p)
	}
	sort.Slice(n, func(i, j int) bool { return n[i].cmd < n[j].cmd })
	return n
}

// tally prints the processes and returns their RSS in MiB and count, per VM.
func tally(who string, ps []proc) (mibPerVM, procsPerVM float64) {
	var rss, pss int
	for _, p := range ps {
		fmt.Printf("  %s: pid %d rss %d KiB pss %d KiB: %.100s\n", who, p.pid, p.rssKiB, p.pssKiB, p.cmd)
		rss += p.rssKiB
		pss += p.pssKiB
	}
	fmt.Printf("  %s: %d processes, RSS %.1f MiB (PSS %.1f MiB) for %d domains\n", who, len(ps), float64(rss)/1024, float64(pss)/1024, count)
	return float64(rss) / 1024 / count, float64(len(ps)) / count
}

func vmName(i int) string { return fmt.Sprintf("fp%d", i) }

// settle waits until the set of processes has been the same for 2 s (a
// start's helpers have exited) or 30 s have passed.
func settle() (map[int]proc, error) {
	var last map[int]proc
	same := 0
	for range 30 {
		now, err := procs()
		if err != nil {
			return nil, err
		}
		if last != nil && len(newProcs(last, now)) == 0 && len(newProcs(now, last)) == 0 {
			if same++; same >= 2 {
				return now, nil
			}
		} else {
			same = 0
		}
		last = now
		time.Sleep(time.Second)
	}
	return last, nil
}

func measure() error {
	if err := bedbench.InstallKernel(); err != nil {
		return err
	}
	for i := range count {
		if err := bedbench.CreateVM(vmName(i), "purple", 96); err != nil {
			return err
		}
	}

	base, err := settle()
	if err != nil {
		return err
	}
	fmt.Printf("  qvm-start of %d VMs\n", count)
	for i := range count {
		if _, err := bedbench.Sh("qvm-start", vmName(i)); err != nil {
			return err
		}
	}
	now, err := settle()
	if err != nil {
		return err
	}
	var names []string
	for i := range count {
		names = append(names, vmName(i))
	}
	if err := bedbench.Running(names); err != nil {
		return err
	}
	qMiB, qProcs := tally("qvm", newProcs(base, now))
	fmt.Println("  stopping the qvm VMs; xl create of the same domains")
	for i := range count {
		if _, err := bedbench.Sh("qvm-kill", vmName(i)); err != nil {
			return err
		}
	}

	var loops []*loopdev.Device
	defer func() { bedbench.CloseLoops(loops) }()
	cfgs := make([]string, count)
	for i := range count {
		cfg, l, err := bedbench.XLConfig(vmName(i), vmName(i)+"-xl")
		if err != nil {
			return err
		}
		cfgs[i] = cfg
		loops = append(loops, l...)
	}
	if base, err = settle(); err != nil {
		return err
	}
	for i := range count {
		if _, err := bedbench.Sh("xl", "create", "-q", cfgs[i]); err != nil {
			return err
		}
	}
	if now, err = settle(); err != nil {
		return err
	}
	names = names[:0]
	for i := range count {
		names = append(names, vmName(i)+"-xl")
	}
	if err := bedbench.Running(names); err != nil {
		return err
	}
	xMiB, xProcs := tally("xl", newProcs(base, now))
	for i := range count {
		if _, err := bedbench.Sh("xl", "destroy", vmName(i)+"-xl"); err != nil {
			return err
		}
	}
	fmt.Printf("footprint: qvm %.1f MiB/vm %.2f procs/vm xl %.1f MiB/vm %.2f procs/vm\n", qMiB, qProcs, xMiB, xProcs)
	return nil
}
