// Command parallel is `make bench-parallel`: inside the nested Xen of the
// test bed (one boot, one run) it starts 8 VMs at once with qvm-start and
// 8 identical domains at once with `xl create` (the xl.cfg each VM's
// `qvm-start --dry-run` prints, disks on loop devices as qvm puts them),
// each from the commands to the last domain running, and the same 8 VMs
// with qvm-start one after another. While the parallel qvm starts run, it
// times a qvm-ls, which must not wait for them. The last line reads:
//
//	parallel: qvm-8 A ms xl-8 B ms ratio A/B serial-qvm C ms
package main

import (
	"flag"
	"fmt"
	"os"
	"regexp"
	"sync"
	"time"

	"github.com/qvm-project/qvm/bench/bedbench"
	"github.com/qvm-project/qvm/loopdev"
)

// count is how many VMs start together.
const count = 8

func main() {
	inside := flag.Bool("inside", false, "measure (in dom0)")
	runs := flag.Int("runs", 3, "rounds of each kind")
	flag.Parse()
	if *inside {
		if err := measure(*runs); err != nil {
			fmt.Fprintf(os.Stderr, "bench-parallel: %v\n", err)
			os.Exit(1)
		}
		return
	}
	os.Exit(bedbench.Host("bench-parallel", []string{fmt.Sprintf("-runs=%d", *runs)}, regexp.MustCompile(`(?m)^parallel: .*$`)))
}

func vmName(i int) string { return fmt.Sprintf("par%d", i) }

// together runs f(0..count-1) at once and returns the wall time until the
// last returned, and the first error.
func together(f func(i int) error) (time.Duration, error) {
	var wg sync.WaitGroup
	errs := make([]error, count)
	t := time.Now()
	for i := range count {
		wg.Go(func() { errs[i] = f(i) })
	}
	wg.Wait()
	d := time.Since(t)
	for _, err := range errs {
		if err != nil {
			return d, err
		}
	}
	return d, nil
}

func qvmNames() []string {
	var n []string
	for i := range count {
		n = append(n, vmName(i))
	}
	return n
}

func killAll() error {
	_, err := together(func(i int) error {
		_, err := bedbench.Sh("qvm-kill", vmName(i))
		return err
	})
	return err
}

// qvmParallel starts the VMs at once and, 300 ms in, times a qvm-ls.
func qvmParallel() (all, ls float64, err error) {
	lsDone := make(chan error, 1)
	go func() {
		time.Sleep(300 * time.Millisecond)
		ms, err := bedbench.Timed("qvm-ls")
		ls = ms
		lsDone <- err
	}()
	d, err := together(func(i int) error {
		_, err := bedbench.Sh("qvm-start", vmName(i))
		return err
	})
	if lerr := <-lsDone; err == nil && lerr != nil {
		err = lerr
	}
	if err == nil {
		err = bedbench.Running(qvmNames())
	}
	return bedbench.Ms(d), ls, err
}

func qvmSerial() (float64, error) {
	t := time.Now()
	for i := range count {
		if _, err := bedbench.Sh("qvm-start", vmName(i)); err != nil {
			return 0, err
		}
	}
	d := time.Since(t)
	return bedbench.Ms(d), bedbench.Running(qvmNames())
}

// xlParallel creates the same domains with xl at once; their configs and
// loop devices are made before the clock starts.
func xlParallel() (float64, error) {
	cfgs := make([]string, count)
	var names []string
	var loops []*loopdev.Device
	defer func() { bedbench.CloseLoops(loops) }()
	for i := range count {
		name := vmName(i) + "-xl"
		cfg, l, err := bedbench.XLConfig(vmName(i), name)
		if err != nil {
			return 0, err
		}
		cfgs[i] = cfg
		names = append(names, name)
		loops = append(loops, l...)
	}
	d, err := together(func(i int) error {
		_, err := bedbench.Sh("xl", "create", "-q", cfgs[i])
		return err
	})
	if err == nil {
		err = bedbench.Running(names)
	}
	if _, derr := together(func(i int) error {
		_, err := bedbench.Sh("xl", "destroy", names[i])
		return err
	}); err == nil {
		err = derr
	}
	return bedbench.Ms(d), err
}

func measure(runs int) error {
	if err := bedbench.InstallKernel(); err != nil {
		return err
	}
	for i := range count {
		if err := bedbench.CreateVM(vmName(i), "orange", 96); err != nil {
			return err
		}
	}
	var qs, xs, ss []float64
	for r := 0; r <= runs; r++ {
		q, ls, err := qvmParallel()
		if err != nil {
			return err
		}
		if err := killAll(); err != nil {
			return err
		}
		x, err := xlParallel()
		if err != nil {
			return err
		}
		s, err := qvmSerial()
		if err != nil {
			return err
		}
		if err := killAll(); err != nil {
			return err
		}
		if r == 0 {
			// The first round warms the caches.
			fmt.Printf("  warm-up: qvm-8 %.0f ms, xl-8 %.0f ms, serial qvm %.0f ms\n", q, x, s)
			continue
		}
		fmt.Printf("  run %d: qvm-8 %.0f ms (a qvm-ls during it %.0f ms), xl-8 %.0f ms, serial qvm %.0f ms\n", r, q, ls, x, s)
		qs, xs, ss = append(qs, q), append(xs, x), append(ss, s)
	}
	q, x, s := bedbench.Median(qs), bedbench.Median(xs), bedbench.Median(ss)
	fmt.Printf("parallel: qvm-8 %.0f ms xl-8 %.0f ms ratio %.2f serial-qvm %.0f ms\n", q, x, q/x, s)
	return nil
}
