// Package bedbench holds what the benchmarks that run inside the nested-Xen
// test bed share: booting the bed with the benchmark's own binary and
// printing its summary line last (Host), running and timing commands in
// dom0, and the xl.cfg that makes `xl create` start the same domain as
// `qvm-start` (XLConfig).
package bedbench

import (
	"context"
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

// Host boots the test bed once with the running binary shared as name and
// runs it there with -inside and args; the inside run's output goes to
// standard output as it comes, and the last line of that output that
// summary matches is printed again at the end, so that it is the last
// line. It returns the exit code for the command.
func Host(name string, args []string, summary *regexp.Regexp) int {
	p, err := xenvm.DefaultParts()
	if err == nil && len(p.Missing()) > 0 {
		err = fmt.Errorf("parts not built (make dom0-image guest-image): %v", p.Missing())
	}
	if err != nil {
		fmt.Fprintf(os.Stderr, "%s: %v\n", name, err)
		return 1
	}
	self, err := os.Executable()
	if err != nil {
		fmt.Fprintf(os.Stderr, "%s: find this binary: %v\n", name, err)
		return 1
	}
	files := p.GuestFiles()
	files[name] = self
	unlock, err := xenvm.LockBed(context.Background(), os.Stderr, name)
	if err != nil {
		fmt.Fprintf(os.Stderr, "%s: %v\n", name, err)
		return 1
	}
	defer unlock()
	var out strings.Builder
	argv := append([]string{xenvm.ShareMount + "/" + name, "-inside"}, args...)
	res, err := xenvm.Run(context.Background(), xenvm.Config{
		Parts:   p,
		Files:   files,
		Job:     hostjob.Job{Argv: argv, Dir: xenvm.ShareMount},
		Output:  io.MultiWriter(os.Stdout, &out),
		Timeout: 40 * time.Minute,
	})
	if err != nil {
		fmt.Fprintf(os.Stderr, "%s: %v\n", name, err)
		return 1
	}
	if res.Status.ExitCode != 0 {
		fmt.Fprintf(os.Stderr, "%s: the run inside dom0 failed (exit %d); serial log ends:\n%s\n", name, res.Status.ExitCode, xenvm.Tail(res.Serial, 20))
		return 1
	}
	m := summary.FindAllString(out.String(), -1)
	if len(m) == 0 {
		fmt.Fprintf(os.Stderr, "%s: the run printed no summary line\n", name)
		return 1
	}
	fmt.Println(m[len(m)-1])
	return 0
}

// cmdTimeout bounds each command Sh runs, so that a hung start or kill
// ends the benchmark with its name rather than at the bed's timeout.
const cmdTimeout = 5 * time.Minute

// Sh runs a command in dom0 and returns its combined output; the error
// names the command and holds the output.
func Sh(argv ...string) (string, error) {
	ctx, cancel := context.WithTimeout(context.Background(), cmdTimeout)
	defer cancel()
	out, err := exec.CommandContext(ctx, argv[0], argv[1:]...).CombinedOutput()
	if ctx.Err() != nil {
		err = fmt.Errorf("no end after %s: %w", cmdTimeout, err)
	}
	if err != nil {
		return string(out), fmt.Errorf("%s: %w\n%s", strings.Join(argv, " "), err, out)
	}
	return string(out), nil
}

// Running checks that xl lists a domain of each of names.
func Running(names []string) error {
	out, err := Sh("xl", "list")
	if err != nil {
		return err
	}
	have := map[string]bool{}
	for _, l := range strings.Split(out, "\n")[1:] {
		if f := strings.Fields(l); len(f) > 0 {
			have[f[0]] = true
		}
	}
	for _, n := range names {
		if !have[n] {
			return fmt.Errorf("domain %s is not in xl list after its start:\n%s", n, out)
		}
	}
	return nil
}

// Timed runs a command and returns its wall time in milliseconds.
func Timed(argv ...string) (float64, error) {
	t := time.Now()
	_, err := Sh(argv...)
	return Ms(time.Since(t)), err
}

// Ms is d in milliseconds.
func Ms(d time.Duration) float64 { return float64(d.Microseconds()) / 1000 }

// Median is the middle value of v (the upper one of an even count).
func Median(v []float64) float64 {
	s := append([]float64(nil), v...)
	sort.Float64s(s)
	return s[len(s)/2]
}

// KernelName is the VM kernel that InstallKernel installs and that
// CreateVM's VMs boot.
const KernelName = "6.1-bench"

// InstallKernel puts the bed's guest kernel and tiny guest image in qvm's
// VM-kernels directory as KernelName.
func InstallKernel() error {
	kdir := "/var/lib/qvm/vm-kernels/" + KernelName
	for _, c := range [][]string{
		{"mkdir", "-p", kdir},
		{"cp", xenvm.GuestKernel, kdir + "/vmlinuz"},
		{"cp", xenvm.GuestImage, kdir + "/initramfs"},
	} {
		if _, err := Sh(c...); err != nil {
			return err
		}
	}
	return nil
}

// CreateVM defines a one-vCPU StandaloneVM of memMiB (no ballooning) that
// boots the tiny guest and waits there.
func CreateVM(name, label string, memMiB int) error {
	_, err := Sh("qvm-create", "--class", "StandaloneVM", "--label", label,
		"--property", fmt.Sprintf("memory=%d", memMiB), "--property", "maxmem=0",
		"--property", "vcpus=1", "--property", "kernel="+KernelName,
		"--property", "kernelopts=quiet qvm.after=wait", name)
	return err
}

// XLConfig writes the dry-run xl.cfg of vm, renamed to name, with its file
// disks on loop devices the way qvm-start puts them (package loopdev,
// autoclear); it returns the config's path and the devices, to be closed
// once the domain holds them.
func XLConfig(vm, name string) (string, []*loopdev.Device, error) {
	out, err := Sh("qvm-start", "--dry-run", vm)
	if err != nil {
		return "", nil, err
	}
	end := strings.Index(out, "# "+vm+": libxl domain config (JSON)")
	if end < 0 {
		return "", nil, fmt.Errorf("qvm-start --dry-run %s: no libxl JSON marker in its output", vm)
	}
	cfg := strings.Replace(out[:end], `name = "`+vm+`"`, `name = "`+name+`"`, 1)
	cfg = regexp.MustCompile(`(?m)^uuid = .*$`).ReplaceAllString(cfg, "")
	cfg, loops, err := xlcfg.OnLoops(context.Background(), cfg)
	if err != nil {
		return "", nil, err
	}
	path := filepath.Join(os.TempDir(), name+".cfg")
	if err := os.WriteFile(path, []byte(cfg), 0o644); err != nil {
		CloseLoops(loops)
		return "", nil, err
	}
	return path, loops, nil
}

// CloseLoops closes the loop devices XLConfig opened (autoclear: each goes
// once its domain lets go of it).
func CloseLoops(loops []*loopdev.Device) {
	for _, l := range loops {
		l.Close()
	}
}
