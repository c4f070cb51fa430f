// Package xenvm boots real Xen inside QEMU (pure emulation, no KVM needed)
// with the project's dom0 image, runs one command in dom0 and brings its
// output and exit status back: the test bed of the end-to-end tests and of
// the demo.
//
// The machine: qemu-system-x86_64 with -cpu qemu64,+svm,+npt (so Xen offers
// HVM with HAP; Config.NoHVM drops them), Xen as the multiboot kernel, the
// Debian kernel as dom0 with the dom0 image (cmd/dom0init as /init) as its
// initramfs. A host directory is shared into dom0 over virtio 9p at
// /mnt/host: the job (package hostjob) and any Files go in, the job's output
// and status come out. QEMU runs with -nic none and is always killed when
// Run returns.
//
// Build the parts first with `make dom0-image guest-image`.
package xenvm

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"syscall"
	"time"

	"github.com/qvm-project/qvm/e2e/hostjob"
)

// ShareMount is where dom0 sees the host's shared directory.
const ShareMount = "/mnt/host"

// shareTag is the 9p mount tag of the shared directory.
const shareTag = "qvmhost"

// Config describes one boot of the test bed.
type Config struct {
	// Parts are the Xen binary, the dom0 kernel and the dom0 image
	// (default: DefaultParts()).
	Parts Parts
	// ExtraInitrds are cpio archives (gzip-compressed or not) appended
	// to the dom0 image, e.g. QEMU's device model for HVM tests; the
	// kernel unpacks them over the image.
	ExtraInitrds []string
	// Job is the command dom0 runs once it is ready. A zero Job just
	// boots dom0 and powers it off.
	Job hostjob.Job
	// Files are copied into the shared directory before the boot: the
	// key is the name under ShareMount in dom0, the value a host path.
	Files map[string]string
	// Output receives the job's output (stdout and stderr) as it runs.
	Output io.Writer
	// Serial receives the machine's serial console as it comes: Xen's
	// messages and dom0's console (the kernel's and dom0init's lines).
	Serial io.Writer
	// NoHVM boots a CPU without SVM and nested paging, so Xen offers no
	// HVM guests: the "hardware virtualisation disabled" case.
	NoHVM bool
	// MemoryMiB is the emulated machine's RAM (default 3072);
	// Dom0MemMiB is dom0's share of it (default 1024); CPUs is the number
	// of emulated CPUs (default 1: see defaultCPUs).
	MemoryMiB, Dom0MemMiB, CPUs int
	// XenArgs and KernelArgs are appended to Xen's and dom0's command lines.
	XenArgs, KernelArgs []string
	// WorkDir receives the shared directory (WorkDir/share) and the serial
	// log (WorkDir/serial.log); default a new temporary directory that Run
	// removes unless KeepWorkDir is set.
	WorkDir     string
	KeepWorkDir bool
	// QEMU is the emulator binary (default qemu-system-x86_64 on PATH).
	QEMU string
	// Timeout bounds the whole run when ctx has no earlier deadline
	// (default 15 minutes).
	Timeout time.Duration
	// BootTimeout is how long dom0 may take to print dom0init's "ready"
	// line (default 4 minutes). A boot that misses it is killed and, up to
	// BootAttempts boots in all (default 2), started again: under TCG the
	// dom0 kernel rarely stalls during boot, which is no fault of the job.
	// Each such boot is recorded in Result.HungBoots.
	BootTimeout  time.Duration
	BootAttempts int
}

// Result is what a boot brought back.
type Result struct {
	// Status is how the job ended, as dom0 wrote it.
	Status hostjob.Status
	// Output is the job's output (stdout and stderr).
	Output []byte
	// Serial is the whole serial console log.
	Serial []byte
	// Boot is the wall time from starting QEMU to dom0init's "ready"
	// line; Total is the wall time of the whole run.
	Boot, Total time.Duration
	// QEMUArgs is the emulator's command line, for reports.
	QEMUArgs []string
	// BootAttempts is the number of boots it took; HungBoots holds the
	// end of the serial log of each boot that stalled before dom0 was
	// ready (see Config.BootTimeout).
	BootAttempts int
	HungBoots    []string
}

// ErrNoStatus is wrapped by Run's error when the machine stopped (or was
// stopped) before dom0 reported the job's status.
var ErrNoStatus = errors.New("dom0 did not report the job's status")

// defaultTimeout bounds a run when Config.Timeout is zero.
const defaultTimeout = 15 * time.Minute

// defaultBootTimeout is how long dom0 may take to get ready. Under load on
// a 2-core machine it takes up to about 30 s; the rare boot that stalls
// inside the emulated dom0 kernel never gets there.
const defaultBootTimeout = 4 * time.Minute

// readyLine matches dom0init's line saying dom0 is up.
var readyLine = regexp.MustCompile(`dom0init: \[ *[0-9.]+\] ready:`)

// failedLine matches dom0init's line saying why it gave up.
var failedLine = regexp.MustCompile(`dom0init: \[ *[0-9.]+\] FAILED: [^\r\n]*`)

// Run boots the test bed, runs cfg.Job in dom0 and returns when the machine
// has powered off (or ctx ended, or the timeout passed: then QEMU is killed).
// It returns an error wrapping ErrNoStatus, with the end of the serial log,
// if the job's status never came back. A job that ran and failed is not an
// error: look at Result.Status.
func Run(ctx context.Context, cfg Config) (*Result, error) {
	start := time.Now()
	cfg, err := cfg.withDefaults()
	if err != nil {
		return nil, err
	}
	if cfg.Timeout > 0 {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, cfg.Timeout)
		defer cancel()
	}
	work := cfg.WorkDir
	if work == "" {
		if work, err = os.MkdirTemp("", "xenvm-"); err != nil {
			return nil, fmt.Errorf("xenvm: work directory: %w", err)
		}
		if !cfg.KeepWorkDir {
			defer os.RemoveAll(work)
		}
	}
	share := filepath.Join(work, "share")
	if err := prepareShare(share, cfg); err != nil {
		return nil, err
	}
	initrd, err := joinInitrds(work, cfg.Parts.Dom0Image, cfg.ExtraInitrds)
	if err != nil {
		return nil, err
	}
	res := &Result{}
	for attempt := 1; ; attempt++ {
		serialPath := filepath.Join(work, fmt.Sprintf("serial-%d.log", attempt))
		args, err := qemuArgs(cfg, initrd, share, serialPath)
		if err != nil {
			return nil, err
		}
		res.QEMUArgs = append([]string{cfg.QEMU}, args...)
		res.BootAttempts = attempt
		hung, err := boot(ctx, cfg, res, args, share, serialPath)
		res.Total = time.Since(start)
		if hung && attempt < cfg.BootAttempts && ctx.Err() == nil {
			// An emulated boot that stalls before dom0 is ready is
			// the emulator's flake, not the job's: boot again.
			msg := fmt.Sprintf("\nxenvm: dom0 not ready %s after QEMU started (attempt %d of %d); killed QEMU, booting again\n", cfg.BootTimeout, attempt, cfg.BootAttempts)
			if cfg.Serial != nil {
				_, _ = io.WriteString(cfg.Serial, msg)
			}
			res.HungBoots = append(res.HungBoots, Tail(res.Serial, 15))
			if err := os.RemoveAll(filepath.Join(share, hostjob.OutDir)); err != nil {
				return res, fmt.Errorf("xenvm: reset share: %w", err)
			}
			continue
		}
		return res, err
	}
}

// boot runs QEMU once. hung reports that dom0 did not get ready within
// cfg.BootTimeout, so QEMU was killed before the job could start.
func boot(ctx context.Context, cfg Config, res *Result, args []string, share, serialPath string) (hung bool, err error) {
	bootCtx, cancel := context.WithCancel(ctx)
	defer cancel()
	var qemuOut bytes.Buffer
	cmd := exec.CommandContext(bootCtx, cfg.QEMU, args...)
	cmd.Stdout = &qemuOut
	cmd.Stderr = &qemuOut
	// QEMU dies with us even if this process is killed.
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	cmd.WaitDelay = 5 * time.Second
	if err := cmd.Start(); err != nil {
		return false, fmt.Errorf("xenvm: start %s: %w", cfg.QEMU, err)
	}
	qemuStart := time.Now()
	exited := make(chan error, 1)
	go func() { exited <- cmd.Wait() }()

	serial := &follower{path: serialPath, w: cfg.Serial}
	output := &follower{path: filepath.Join(share, hostjob.OutputFile), w: cfg.Output}
	res.Boot = 0
	var waitErr error
	tick := time.NewTicker(200 * time.Millisecond)
loop:
	for {
		select {
		case waitErr = <-exited:
			break loop
		case <-tick.C:
			serial.poll()
			output.poll()
			if res.Boot == 0 && readyLine.Match(serial.data) {
				res.Boot = time.Since(qemuStart)
			}
			if res.Boot == 0 && !hung && time.Since(qemuStart) > cfg.BootTimeout {
				hung = true
				cancel()
			}
		}
	}
	tick.Stop()
	serial.poll()
	output.poll()
	if res.Boot == 0 && readyLine.Match(serial.data) {
		res.Boot = time.Since(qemuStart)
	}
	res.Serial = serial.data
	res.Output = output.data

	st, stErr := hostjob.ReadStatus(share)
	if stErr == nil {
		res.Status = st
		return false, nil
	}
	why := "the machine powered off"
	switch {
	case hung:
		why = fmt.Sprintf("dom0 not ready %s after QEMU started; killed it", cfg.BootTimeout)
	case ctx.Err() != nil:
		why = fmt.Sprintf("stopped: %v", context.Cause(ctx))
	case waitErr != nil:
		why = fmt.Sprintf("qemu: %v: %s", waitErr, strings.TrimSpace(qemuOut.String()))
	}
	if failed := failedLine.Find(res.Serial); failed != nil {
		why += "; " + string(failed)
	}
	return hung, fmt.Errorf("xenvm: %w (%s; status: %v); serial log ends:\n%s", ErrNoStatus, why, stErr, Tail(res.Serial, 40))
}

func (c Config) withDefaults() (Config, error) {
	if c.Parts == (Parts{}) {
		p, err := DefaultParts()
		if err != nil {
			return c, err
		}
		c.Parts = p
	}
	if err := c.Parts.check(); err != nil {
		return c, err
	}
	if c.QEMU == "" {
		c.QEMU = "qemu-system-x86_64"
	}
	if c.MemoryMiB == 0 {
		c.MemoryMiB = 3072
	}
	if c.Dom0MemMiB == 0 {
		c.Dom0MemMiB = 1024
	}
	if c.CPUs == 0 {
		c.CPUs = defaultCPUs
	}
	if c.Timeout == 0 {
		c.Timeout = defaultTimeout
	}
	if c.BootTimeout == 0 {
		c.BootTimeout = defaultBootTimeout
	}
	if c.BootAttempts == 0 {
		c.BootAttempts = 2
	}
	if len(c.Job.Argv) > 0 {
		if err := c.Job.Validate(); err != nil {
			return c, fmt.Errorf("xenvm: %w", err)
		}
	}
	for name := range c.Files {
		if name == "" || filepath.IsAbs(name) || strings.Contains(name, "..") || name == hostjob.JobFile || strings.HasPrefix(name, hostjob.OutDir+"/") || name == hostjob.OutDir {
			return c, fmt.Errorf("xenvm: file name %q: want a relative path inside the share, not %s or %s/", name, hostjob.JobFile, hostjob.OutDir)
		}
	}
	return c, nil
}

// prepareShare fills the shared directory with the files and the job.
func prepareShare(share string, cfg Config) error {
	if err := os.MkdirAll(share, 0o755); err != nil {
		return fmt.Errorf("xenvm: share: %w", err)
	}
	for name, src := range cfg.Files {
		if err := copyFile(src, filepath.Join(share, name)); err != nil {
			return fmt.Errorf("xenvm: share file %s: %w", name, err)
		}
	}
	if len(cfg.Job.Argv) > 0 {
		if err := hostjob.WriteJob(share, cfg.Job); err != nil {
			return fmt.Errorf("xenvm: %w", err)
		}
	}
	return nil
}

// joinInitrds returns the dom0 initramfs: the image itself, or the image
// with the extra archives appended (the kernel unpacks concatenated cpio
// archives, compressed or not, in order).
func joinInitrds(work, image string, extra []string) (string, error) {
	if len(extra) == 0 {
		return image, nil
	}
	dst := filepath.Join(work, "dom0-initrd.cpio")
	out, err := os.Create(dst)
	if err != nil {
		return "", fmt.Errorf("xenvm: initrd: %w", err)
	}
	defer out.Close()
	for _, p := range append([]string{image}, extra...) {
		in, err := os.Open(p)
		if err != nil {
			return "", fmt.Errorf("xenvm: initrd: %w", err)
		}
		_, err = io.Copy(out, in)
		in.Close()
		if err != nil {
			return "", fmt.Errorf("xenvm: initrd %s: %w", p, err)
		}
	}
	return dst, out.Close()
}

// defaultCPUs is one emulated CPU. With two (QEMU's multi-threaded TCG,
// a host thread per CPU) guests triple-faulted early in their boot, more
// often the busier the host: with a CPU-bound process beside the run,
// both boots of TestStubdomHVM lost their HVM guest, Xen's dump of it
// holding Xen's own RIP and CR2 (state of the nested hypervisor leaking
// into the guest's: a race of the emulator's nested SVM between its
// threads). With one CPU the same run passed, and dom0 booted no slower
// under that load. -accel tcg,thread=single with two CPUs instead hung the
// HVM guest in its BIOS.
const defaultCPUs = 1

// qemuArgs is the emulator's command line.
func qemuArgs(cfg Config, initrd, share, serialPath string) ([]string, error) {
	for _, p := range []string{cfg.Parts.Xen, cfg.Parts.Kernel, initrd, share, serialPath} {
		if strings.ContainsAny(p, " ,\t\n") {
			return nil, fmt.Errorf("xenvm: path %q: QEMU's multiboot module list cannot hold spaces or commas", p)
		}
	}
	cpu := "qemu64,+svm,+npt"
	if cfg.NoHVM {
		cpu = "qemu64,-svm"
	}
	xenArgs := append([]string{
		"console=com1", "com1=115200,8n1",
		fmt.Sprintf("dom0_mem=%dM,max:%dM", cfg.Dom0MemMiB, cfg.Dom0MemMiB),
		"loglvl=all", "guest_loglvl=all",
	}, cfg.XenArgs...)
	kernelArgs := []string{"console=hvc0", "earlyprintk=xen", "qvm.share=" + shareTag}
	if len(cfg.Job.Argv) > 0 {
		kernelArgs = append(kernelArgs, "qvm.run=job")
	} else {
		kernelArgs = append(kernelArgs, "qvm.run=none")
	}
	kernelArgs = append(kernelArgs, cfg.KernelArgs...)
	for _, a := range kernelArgs {
		if strings.Contains(a, ",") {
			return nil, fmt.Errorf("xenvm: kernel argument %q: commas are not allowed in QEMU's multiboot module list", a)
		}
	}
	return []string{
		"-nographic", "-no-reboot",
		"-m", fmt.Sprint(cfg.MemoryMiB),
		"-smp", fmt.Sprint(cfg.CPUs),
		"-cpu", cpu,
		"-nic", "none",
		"-kernel", cfg.Parts.Xen,
		"-append", strings.Join(xenArgs, " "),
		"-initrd", cfg.Parts.Kernel + " " + strings.Join(kernelArgs, " ") + "," + initrd,
		"-virtfs", "local,path=" + share + ",mount_tag=" + shareTag + ",security_model=none,id=" + shareTag,
		"-serial", "file:" + serialPath,
		"-monitor", "none",
		"-display", "none",
	}, nil
}

// follower reads what has been appended to a file since the last poll and
// passes it on.
type follower struct {
	path string
	w    io.Writer
	data []byte
}

func (f *follower) poll() {
	fh, err := os.Open(f.path)
	if err != nil {
		return
	}
	defer fh.Close()
	if _, err := fh.Seek(int64(len(f.data)), io.SeekStart); err != nil {
		return
	}
	b, _ := io.ReadAll(fh)
	if len(b) == 0 {
		return
	}
	f.data = append(f.data, b...)
	if f.w != nil {
		_, _ = f.w.Write(b)
	}
}

// Tail returns the last n lines of a log.
func Tail(b []byte, n int) string {
	lines := strings.Split(strings.TrimRight(string(b), "\n"), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}

func copyFile(src, dst string) error {
	in, err := os.Open(src)
	if err != nil {
		return err
	}
	defer in.Close()
	fi, err := in.Stat()
	if err != nil {
		return err
	}
	if err := os.MkdirAll(filepath.Dir(dst), 0o755); err != nil {
		return err
	}
	out, err := os.OpenFile(dst, os.O_CREATE|os.O_WRONLY|os.O_TRUNC, fi.Mode().Perm())
	if err != nil {
		return err
	}
	if _, err := io.Copy(out, in); err != nil {
		out.Close()
		return err
	}
	return out.Close()
}
