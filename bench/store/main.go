// Command store benchmarks qvm's definition store from the command line,
// as a user meets it: `qvm-ls -n` over 1,000 defined VMs and one
// `qvm-prefs VM PROP`, each the median of several runs of the real binary.
// With -clone-line (the last line of bench/clone: our clone against cp of
// the same 10 GiB sparse image), it prints the summary line of
// `make bench-store` last:
//
//	store: ls-n-1000 X ms prefs-get Y ms clone Z ms cp W ms ratio W/Z
package main

import (
	"flag"
	"fmt"
	"log"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strings"
	"sync"
	"time"
)

func main() {
	qvm := flag.String("qvm", "bin/qvm", "qvm binary")
	n := flag.Int("vms", 1000, "VMs to define")
	runs := flag.Int("runs", 21, "timed runs of each command")
	cloneLine := flag.String("clone-line", "", "last line of bench/clone (clone Z ms cp W ms ratio R)")
	flag.Parse()
	bin, err := filepath.Abs(*qvm)
	if err != nil {
		log.Fatal(err)
	}
	dir, err := os.MkdirTemp("", "qvm-bench-store")
	if err != nil {
		log.Fatal(err)
	}
	defer os.RemoveAll(dir)
	env := append(os.Environ(), "QVM_DIR="+dir)
	run := func(args ...string) {
		cmd := exec.Command(bin, args...)
		cmd.Env = env
		if out, err := cmd.CombinedOutput(); err != nil {
			log.Fatalf("qvm %s: %v\n%s", strings.Join(args, " "), err, out)
		}
	}

	start := time.Now()
	run("create", "--class", "TemplateVM", "-l", "black", "debian-12")
	run("create", "-l", "green", "--template", "debian-12", "--property", "provides_network=True", "sys-firewall")
	var wg sync.WaitGroup
	next := make(chan int)
	for w := 0; w < 4; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range next {
				run("create", "-l", "red", "--template", "debian-12", "--property", "netvm=sys-firewall", fmt.Sprintf("vm%04d", i))
			}
		}()
	}
	for i := 2; i < *n; i++ {
		next <- i
	}
	close(next)
	wg.Wait()
	fmt.Printf("defined %d VMs in %s\n", *n, time.Since(start).Round(time.Millisecond))

	lsN := median(*runs, func() { run("ls", "-n") })
	prefs := median(*runs, func() { run("prefs", "vm0500", "memory") })
	fmt.Printf("qvm-ls -n over %d VMs: median %.1f ms of %d runs\n", *n, lsN, *runs)
	fmt.Printf("qvm-prefs VM memory: median %.1f ms of %d runs\n", prefs, *runs)
	if *cloneLine == "" {
		fmt.Printf("store: ls-n-1000 %.1f ms prefs-get %.1f ms\n", lsN, prefs)
		return
	}
	var z, w, r float64
	if _, err := fmt.Sscanf(*cloneLine, "clone %f ms cp %f ms ratio %f", &z, &w, &r); err != nil {
		log.Fatalf("clone line %q: %v", *cloneLine, err)
	}
	fmt.Printf("store: ls-n-1000 %.1f ms prefs-get %.1f ms clone %.1f ms cp %.1f ms ratio %.2f\n", lsN, prefs, z, w, r)
}

// median times f runs times (after one warm-up) and returns the median in ms.
func median(runs int, f func()) float64 {
	f()
	d := make([]float64, runs)
	for i := range d {
		t := time.Now()
		f()
		d[i] = float64(time.Since(t).Microseconds()) / 1000
	}
	sort.Float64s(d)
	return d[runs/2]
}
