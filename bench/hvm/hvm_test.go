//go:build benchhvm

// Package hvm is `make bench-hvm`: in one boot of the nested Xen test bed,
// the start of an HVM guest with qvm's stubdomain (qvm-start) against the
// same guest with Xen's device model in dom0 (xl create of the xl.cfg
// qvm-start --dry-run prints, with the stubdomain turned off), each from
// the command to the guest's first output (hvmloader's first line on
// Xen's console). It reports the stubdomain's ramdisk size, the memory it
// ran in and where its start-up time went (its kernel, its init, QEMU up),
// and ends with the line
//
//	hvm: qvm-stubdom A ms xl-dom0qemu B ms ratio A/B image C MiB stubmem D MiB
//
// It is built only with the benchhvm tag (make bench-hvm), so that
// `go test ./...` does not run a benchmark of several minutes.
package hvm

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"sort"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/qvm-project/qvm/bench/xlcfg"
	"github.com/qvm-project/qvm/e2e/xenvm"
	"github.com/qvm-project/qvm/stubdom"
	"github.com/qvm-project/qvm/stubdom/testiso"
)

// rounds is how many times each side runs (after one warm-up start of
// each, which primes dom0's caches and the emulator).
const rounds = 3

// resultFile is where dom0 leaves the measurements in the share.
const resultFile = "bench-hvm.json"

// run is one measured start.
type run struct {
	Side       string  `json:"side"`
	FirstMs    float64 `json:"first_ms"`    // command to the guest's first line
	CommandMs  float64 `json:"command_ms"`  // the command itself (create and unpause)
	KernelS    float64 `json:"kernel_s"`    // stubdomain kernel up to init
	InitS      float64 `json:"init_s"`      // init up to QEMU's exec
	QEMUS      float64 `json:"qemu_s"`      // QEMU's exec up to "running"
	StubMemMiB int     `json:"stubmem_mib"` // the stubdomain's memory (xl list)
	MemTotal   int     `json:"mem_total_mib"`
	MemAvail   int     `json:"mem_available_mib"`
}

type results struct {
	Runs         []run `json:"runs"`
	RamdiskBytes int64 `json:"ramdisk_bytes"`
	KernelBytes  int64 `json:"kernel_bytes"`
}

func TestBenchHVM(t *testing.T) {
	if xenvm.Inside() {
		benchInside(t)
		return
	}
	p, err := xenvm.DefaultParts()
	if err != nil {
		t.Fatal(err)
	}
	root := filepath.Dir(filepath.Dir(p.Kernel))
	s, err := testiso.FromDom0Dir(filepath.Dir(p.Kernel))
	if err != nil {
		t.Fatal(err)
	}
	s.WorkDir, s.Label = t.TempDir(), testiso.PowerOffLabel
	s.Out = filepath.Join(s.WorkDir, "guest.iso")
	if err := testiso.Build(context.Background(), s); err != nil {
		t.Fatal(err)
	}
	work := t.TempDir()
	xenvm.RunTest(context.Background(), t, xenvm.Config{
		Parts:        p,
		ExtraInitrds: []string{filepath.Join(root, "dom0", "dom0-qemu.cpio.gz"), filepath.Join(root, "stubdom", "stubdom-dom0.cpio.gz")},
		Files:        map[string]string{"guest.iso": s.Out},
		XenArgs:      []string{"conring_size=1M", "bootscrub=0"},
		WorkDir:      work,
		KeepWorkDir:  true,
		Timeout:      35 * time.Minute,
	})
	b, err := os.ReadFile(filepath.Join(work, "share", resultFile))
	if err != nil {
		t.Fatal(err)
	}
	var res results
	if err := json.Unmarshal(b, &res); err != nil {
		t.Fatal(err)
	}
	report(res)
}

// report prints the measurements; the summary line comes last.
func report(res results) {
	var qvm, xl []run
	for _, r := range res.Runs {
		if r.Side == "qvm" {
			qvm = append(qvm, r)
		} else {
			xl = append(xl, r)
		}
		if r.Side == "qvm" {
			fmt.Printf("hvm-bench: qvm-start (stubdomain) first output %6.0f ms (command %5.0f ms); stubdomain kernel %.2f s, init %.2f s, QEMU up %.2f s; stubdomain %d MiB (kernel sees %d MiB, %d MiB available with QEMU running)\n",
				r.FirstMs, r.CommandMs, r.KernelS, r.InitS, r.QEMUS, r.StubMemMiB, r.MemTotal, r.MemAvail)
		} else {
			fmt.Printf("hvm-bench: xl create (QEMU in dom0)  first output %6.0f ms (command %5.0f ms)\n", r.FirstMs, r.CommandMs)
		}
	}
	a, b := median(qvm, func(r run) float64 { return r.FirstMs }), median(xl, func(r run) float64 { return r.FirstMs })
	mem := 0
	for _, r := range qvm {
		mem = max(mem, r.StubMemMiB)
	}
	fmt.Printf("hvm-bench: medians of %d runs each; stubdomain kernel %.1f MiB, ramdisk %.1f MiB (zstd)\n", len(qvm), float64(res.KernelBytes)/(1<<20), float64(res.RamdiskBytes)/(1<<20))
	fmt.Printf("hvm: qvm-stubdom %.0f ms xl-dom0qemu %.0f ms ratio %.2f image %.1f MiB stubmem %d MiB\n", a, b, a/b, float64(res.RamdiskBytes)/(1<<20), mem)
}

func median(rs []run, f func(run) float64) float64 {
	if len(rs) == 0 {
		return 0
	}
	v := make([]float64, len(rs))
	for i, r := range rs {
		v[i] = f(r)
	}
	sort.Float64s(v)
	return v[len(v)/2]
}

// benchInside runs in dom0.
func benchInside(t *testing.T) {
	dir := t.TempDir()
	iso := filepath.Join(dir, "guest.iso")
	copyFile(t, filepath.Join(xenvm.ShareMount, "guest.iso"), iso)
	runCmd(t, "qvm-create", "--hvm", "--label", "red", "--property", "memory=256", "--property", "vcpus=1", "bench")
	dry := runCmd(t, "qvm-start", "--dry-run", "--cdrom=dom0:"+iso, "bench")
	cfg := filepath.Join(dir, "bench-dom0qemu.cfg")
	if err := os.WriteFile(cfg, []byte(dom0QEMUConfig(t, dry)), 0o644); err != nil {
		t.Fatal(err)
	}
	var res results
	for f, n := range map[string]*int64{filepath.Join(stubdom.Dir, stubdom.RamdiskName): &res.RamdiskBytes, filepath.Join(stubdom.Dir, stubdom.KernelName): &res.KernelBytes} {
		fi, err := os.Stat(f)
		if err != nil {
			t.Fatal(err)
		}
		*n = fi.Size()
	}
	sides := []string{"qvm", "xl"}
	for i := 0; i <= rounds; i++ {
		for _, side := range sides {
			r := measure(t, side, iso, cfg)
			if i == 0 {
				t.Logf("warm-up %s: %.0f ms", side, r.FirstMs)
				continue
			}
			res.Runs = append(res.Runs, r)
		}
		// Alternate which side goes first.
		sides[0], sides[1] = sides[1], sides[0]
	}
	b, _ := json.MarshalIndent(res, "", "  ")
	if err := os.WriteFile(filepath.Join(xenvm.ShareMount, resultFile), b, 0o644); err != nil {
		t.Fatal(err)
	}
}

// dom0QEMUConfig turns qvm's xl.cfg for the VM into the same guest with
// QEMU in dom0: no stubdomain settings, no stubdomain-only arguments, and
// libxl's own QEMU (not qvm's stubdomain device model) as device model.
func dom0QEMUConfig(t *testing.T, dry string) string {
	text, _, ok := strings.Cut(dry, "# bench: libxl domain config (JSON)")
	if !ok {
		t.Fatalf("qvm-start --dry-run printed no xl.cfg:\n%s", dry)
	}
	var out []string
	skip := false
	for _, l := range strings.Split(text, "\n") {
		switch {
		case skip:
			skip = !strings.HasPrefix(l, "]")
			continue
		case strings.HasPrefix(l, "device_model_args_hvm"):
			skip = !strings.HasSuffix(l, "]")
			continue
		case strings.HasPrefix(l, "stubdomain_"), strings.HasPrefix(l, "device_model_override"):
			continue
		case strings.HasPrefix(l, "device_model_stubdomain_override"):
			l = "device_model_stubdomain_override = 0"
		}
		out = append(out, l)
	}
	return strings.Join(out, "\n")
}

// firstLine matches a guest's line on Xen's console.
var firstLine = regexp.MustCompile(`(?m)^\(d(\d+)\) `)

// measure starts the guest one way and returns the time to its first line
// on Xen's console, then kills it.
func measure(t *testing.T, side, iso, cfg string) run {
	t.Helper()
	runCmd(t, "xl", "dmesg", "-c")
	r := run{Side: side}
	start := time.Now()
	if side == "qvm" {
		runCmd(t, "qvm-start", "--cdrom=dom0:"+iso, "bench")
	} else {
		text, err := os.ReadFile(cfg)
		if err != nil {
			t.Fatal(err)
		}
		onLoops, loops, err := xlcfg.OnLoops(context.Background(), string(text))
		if err != nil {
			t.Fatal(err)
		}
		loopCfg := cfg + ".loops"
		if err := os.WriteFile(loopCfg, []byte(onLoops), 0o644); err != nil {
			t.Fatal(err)
		}
		runCmd(t, "xl", "create", loopCfg)
		for _, l := range loops {
			l.Close()
		}
	}
	r.CommandMs = ms(time.Since(start))
	domid := strings.TrimSpace(runCmd(t, "xl", "domid", "bench"))
	deadline := time.Now().Add(10 * time.Minute)
	for {
		out, _ := exec.Command("xl", "dmesg").Output()
		if m := firstLine.FindAllSubmatch(out, -1); hasDomain(m, domid) {
			r.FirstMs = ms(time.Since(start))
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s: no line from domain %s on Xen's console in 10 minutes", side, domid)
		}
		time.Sleep(50 * time.Millisecond)
	}
	if side == "qvm" {
		stubInfo(t, &r)
		runCmd(t, "qvm-kill", "bench")
	} else {
		runCmd(t, "xl", "destroy", "bench")
	}
	for i := 0; i < 600 && exec.Command("xl", "domid", "bench").Run() == nil; i++ {
		time.Sleep(100 * time.Millisecond)
	}
	time.Sleep(time.Second)
	t.Logf("%s: first output %.0f ms", side, r.FirstMs)
	return r
}

func hasDomain(m [][][]byte, domid string) bool {
	for _, s := range m {
		if string(s[1]) == domid {
			return true
		}
	}
	return false
}

var runningLine = regexp.MustCompile(`msg="device model running" .*kernel_s=([0-9.]+) init_s=([0-9.]+) qemu_s=([0-9.]+) mem_total_mib=(\d+) mem_available_mib=(\d+)`)

// stubInfo reads the stubdomain's timings from its log and its memory
// from xl list.
func stubInfo(t *testing.T, r *run) {
	b, _ := os.ReadFile("/var/log/xen/qemu-dm-bench.log")
	m := runningLine.FindAllSubmatch(b, -1)
	if len(m) == 0 {
		t.Fatalf("the stubdomain log has no running line:\n%s", b)
	}
	last := m[len(m)-1]
	f := func(i int) float64 { v, _ := strconv.ParseFloat(string(last[i]), 64); return v }
	r.KernelS, r.InitS, r.QEMUS = f(1), f(2), f(3)
	r.MemTotal, r.MemAvail = int(f(4)), int(f(5))
	out := runCmd(t, "xl", "list", "bench-dm")
	for _, l := range strings.Split(out, "\n") {
		if fs := strings.Fields(l); len(fs) > 2 && fs[0] == "bench-dm" {
			r.StubMemMiB, _ = strconv.Atoi(fs[2])
		}
	}
}

func runCmd(t *testing.T, argv ...string) string {
	t.Helper()
	out, err := exec.Command(argv[0], argv[1:]...).CombinedOutput()
	if err != nil {
		t.Fatalf("%s: %v\n%s", strings.Join(argv, " "), err, out)
	}
	return string(out)
}

func copyFile(t *testing.T, src, dst string) {
	b, err := os.ReadFile(src)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(dst, b, 0o644); err != nil {
		t.Fatal(err)
	}
}

func ms(d time.Duration) float64 { return float64(d.Microseconds()) / 1000 }
