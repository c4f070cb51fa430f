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
	"context"
	"flag"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"sort"
	"strings"
	"time"

	"github.com/qvm-project/qvm/bench/xlcfg"
	"github.com/qvm-project/qvm/e2e/hostjob"
	"github.com/qvm-project/qvm/e2e/xenvm"
	"github.com/qvm-project/qvm/loopdev"
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
	os.Exit(host(*runs))
}

func host(runs int) int {
	p, err := xenvm.DefaultParts()
	if err == nil && len(p.Missing()) > 0 {
		err = fmt.Errorf("parts not built (make dom0-image guest-image): %v", p.Missing())
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "bench-start:", err)
		return 1
	}
	self, _ := os.Executable()
	files := p.GuestFiles()
	files["bench-start"] = self
	var out strings.Builder
	res, err := xenvm.Run(context.Background(), xenvm.Config{
		Parts:   p,
		Files:   files,
		Job:     hostjob.Job{Argv: []string{xenvm.ShareMount + "/bench-start", "-inside", fmt.Sprintf("-runs=%d", runs)}, Dir: xenvm.ShareMount},
		Output:  io.MultiWriter(os.Stdout, &out),
		Timeout: 40 * time.Minute,
	})
	if err != nil {
		fmt.Fprintln(os.Stderr, "bench-start:", err)
		return 1
	}
	if res.Status.ExitCode != 0 {
		return 1
	}
	// The summary line last, after the harness's own output.
	if m := regexp.MustCompile(`(?m)^start: .*$`).FindString(out.String()); m != "" {
		fmt.Println(m)
	}
	return 0
}

func sh(argv ...string) (string, error) {
	out, err := exec.Command(argv[0], argv[1:]...).CombinedOutput()
	if err != nil {
		return string(out), fmt.Errorf("%s: %v\n%s", strings.Join(argv, " "), err, out)
	}
	return string(out), nil
}

// timed runs a command and returns its wall time in ms.
func timed(argv ...string) (float64, error) {
	t := time.Now()
	_, err := sh(argv...)
	return float64(time.Since(t).Microseconds()) / 1000, err
}

func median(v []float64) float64 {
	s := append([]float64(nil), v...)
	sort.Float64s(s)
	return s[len(s)/2]
}

// xlConfig is the dry-run xl.cfg of a VM with its file disks put on loop
// devices the way qvm-start does (package loopdev, autoclear); it returns
// the config path and the devices, to be closed once the domain exists.
func xlConfig(vm, name string) (string, []*loopdev.Device, error) {
	out, err := sh("qvm-start", "--dry-run", vm)
	if err != nil {
		return "", nil, err
	}
	cfg := out[:strings.Index(out, "# "+vm+": libxl domain config (JSON)")]
	cfg = strings.Replace(cfg, `name = "`+vm+`"`, `name = "`+name+`"`, 1)
	cfg = regexp.MustCompile(`(?m)^uuid = .*$`).ReplaceAllString(cfg, "")
	cfg, loops, err := xlcfg.OnLoops(context.Background(), cfg)
	if err != nil {
		return "", nil, err
	}
	path := filepath.Join(os.TempDir(), name+".cfg")
	return path, loops, os.WriteFile(path, []byte(cfg), 0o644)
}

// one measures n starts of each kind and returns the medians.
func one(n int) (qvm, xl float64, err error) {
	var qs, xs []float64
	for i := 0; i < n; i++ {
		// qvm: from the command to the domain running.
		ms, err := timed("qvm-start", "bench")
		if err != nil {
			return 0, 0, err
		}
		qs = append(qs, ms)
		if _, err := sh("qvm-kill", "bench"); err != nil {
			return 0, 0, err
		}
		// xl, the same domain.
		cfg, loops, err := xlConfig("bench", "bench-xl")
		if err != nil {
			return 0, 0, err
		}
		ms, err = timed("xl", "create", "-q", cfg)
		for _, l := range loops {
			l.Close()
		}
		if err != nil {
			return 0, 0, err
		}
		xs = append(xs, ms)
		if _, err := sh("xl", "destroy", "bench-xl"); err != nil {
			return 0, 0, err
		}
		fmt.Printf("  run %d: qvm-start %.0f ms, xl create %.0f ms\n", i+1, qs[i], xs[i])
	}
	return median(qs), median(xs), nil
}

func measure(runs int) error {
	kdir := "/var/lib/qvm/vm-kernels/6.1-bench"
	for _, c := range [][]string{
		{"mkdir", "-p", kdir},
		{"cp", xenvm.GuestKernel, kdir + "/vmlinuz"},
		{"cp", xenvm.GuestImage, kdir + "/initramfs"},
		{"qvm-create", "--class", "StandaloneVM", "--label", "red", "--property", "memory=128", "--property", "maxmem=0",
			"--property", "vcpus=1", "--property", "kernelopts=quiet qvm.after=wait", "bench"},
	} {
		if _, err := sh(c...); err != nil {
			return err
		}
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
		if _, err := sh("qvm-create", "--class", "StandaloneVM", "--label", "gray", "--property", "memory=96", "--property", "maxmem=0",
			"--property", "vcpus=1", "--property", "kernelopts=quiet qvm.after=wait", name); err != nil {
			return err
		}
		if _, err := sh("qvm-start", name); err != nil {
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
