// Command start is `make bench-start`: inside the nested Xen of the test
// bed (one boot, one run), it times qvm-start of a VM against `xl create`
// of the identical configuration (the xl.cfg that `qvm-start --dry-run`
// prints, with its disks on loop devices as qvm puts them), each from the
// command to the domain running (toolstack time, not guest boot), first
// with no other domain and then with 8 other domains running. The last
// line reads:
//
//	start: qvm A ms xl B ms ratio A/B qvm-8 C ms xl-8 D ms ratio-8 C/D
package main

import (
	"flag"
	"fmt"
	"os"
	"regexp"

	"github.com/qvm-project/qvm/bench/bedbench"
)

func main() {
	inside := flag.Bool("inside", false, "measure (in dom0)")
	runs := flag.Int("runs", 5, "starts of each kind per measurement")
	flag.Parse()
	if *inside {
		if err := measure(*runs); err != nil {
			fmt.Fprintf(os.Stderr, "bench-start: %v\n", err)
			os.Exit(1)
		}
		return
	}
	os.Exit(bedbench.Host("bench-start", []string{fmt.Sprintf("-runs=%d", *runs)}, regexp.MustCompile(`(?m)^start: .*$`)))
}

// one measures n starts of each kind and returns the medians.
func one(n int) (qvm, xl float64, err error) {
	var qs, xs []float64
	for i := 0; i < n; i++ {
		// qvm: from the command to the domain running.
		ms, err := bedbench.Timed("qvm-start", "bench")
		if err != nil {
			return 0, 0, err
		}
		qs = append(qs, ms)
		if _, err := bedbench.Sh("qvm-kill", "bench"); err != nil {
			return 0, 0, err
		}
		// xl, the same domain.
		cfg, loops, err := bedbench.XLConfig("bench", "bench-xl")
		if err != nil {
			return 0, 0, err
		}
		ms, err = bedbench.Timed("xl", "create", "-q", cfg)
		bedbench.CloseLoops(loops)
		if err != nil {
			return 0, 0, err
		}
		xs = append(xs, ms)
		if _, err := bedbench.Sh("xl", "destroy", "bench-xl"); err != nil {
			return 0, 0, err
		}
		fmt.Printf("  run %d: qvm-start %.0f ms, xl create %.0f ms\n", i+1, qs[i], xs[i])
	}
	return bedbench.Median(qs), bedbench.Median(xs), nil
}

func measure(runs int) error {
	if err := bedbench.InstallKernel(); err != nil {
		return err
	}
	if err := bedbench.CreateVM("bench", "red", 128); err != nil {
		return err
	}
	// Warm the caches once each way.
	if _, _, err := one(1); err != nil {
		return err
	}
	fmt.Println("no other domains:")
	q0, x0, err := one(runs)
	if err != nil {
		return err
	}
	for i := 0; i < 8; i++ {
		name := fmt.Sprintf("other%d", i)
		if err := bedbench.CreateVM(name, "gray", 96); err != nil {
			return err
		}
		if _, err := bedbench.Sh("qvm-start", name); err != nil {
			return err
		}
	}
	fmt.Println("8 other domains running:")
	q8, x8, err := one(runs)
	if err != nil {
		return err
	}
	fmt.Printf("start: qvm %.0f ms xl %.0f ms ratio %.2f qvm-8 %.0f ms xl-8 %.0f ms ratio-8 %.2f\n", q0, x0, q0/x0, q8, x8, q8/x8)
	return nil
}
