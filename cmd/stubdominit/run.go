package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"golang.org/x/sys/unix"

	"github.com/qvm-project/qvm/bootinit"
	"github.com/qvm-project/qvm/stubdom"
	"github.com/qvm-project/qvm/stubdom/dmargs"
	"github.com/qvm-project/qvm/xenstore"
)

// Where things are in the stubdomain's root file system.
const (
	qmpSocket = "/run/qvm-qmp.sock"
	self      = "/proc/self/exe"
)

// Restart limits for the helper processes (the DHCP server and the QMP
// relay): a helper that keeps dying is left dead, with a log line.
const (
	maxRestarts  = 5
	restartDelay = time.Second
)

// timings are the stages of the stubdomain's start, for the log line the
// benchmark reads.
type timings struct {
	initStart, qemuStart, qemuRunning float64 // kernel uptime, seconds
}

func run(ctx context.Context, log *slog.Logger) error {
	var tm timings
	tm.initStart = 0
	if err := bootinit.MountAll(bootinit.BaseMounts()); err != nil {
		return err
	}
	tm.initStart = uptime()
	log.Info("starting", "kernel_s", fmt.Sprintf("%.3f", tm.initStart))
	// The device model's memory must not be swapped out or overcommitted
	// away behind QEMU's back; nothing here needs the kernel's pointers.
	for f, v := range map[string]string{"/proc/sys/vm/overcommit_memory": "1", "/proc/sys/kernel/kptr_restrict": "2", "/proc/sys/kernel/dmesg_restrict": "1"} {
		if err := os.WriteFile(f, []byte(v), 0o644); err != nil {
			log.Warn("cannot set sysctl", "file", f, "err", err)
		}
	}
	if err := bootinit.LoadModules(stubdom.Modules); err != nil {
		return err
	}
	// The module files are not needed once loaded: give their memory back.
	if err := os.RemoveAll("/lib/modules"); err != nil {
		log.Warn("cannot remove the module files", "err", err)
	}

	xs, err := xenstore.Open(ctx, xenstore.Config{Path: xenstore.XenbusPath, Logger: log})
	if err != nil {
		return fmt.Errorf("connect to xenstore: %w", err)
	}
	defer xs.Close()
	cfg, err := readConfig(ctx, xs)
	if err != nil {
		return err
	}
	args, err := dmargs.Split(cfg.Argv)
	if err != nil {
		return fmt.Errorf("device-model arguments of guest %d: %w", cfg.Target, err)
	}
	log.Info("device model for guest", "self", cfg.Self, "target", cfg.Target, "vm", cfg.VMPath, "args", len(cfg.Argv))
	if args.Audio != "" {
		log.Warn("audio is not supported by this stubdomain; ignoring", "arg", args.Audio)
	}

	r := bootinit.NewReaper()
	defer r.Close()

	var helpers []*helper
	helperExit := make(chan *helper, 4)
	if len(args.NICs) > 0 {
		if err := setupNetwork(ctx, log, args.NICs); err != nil {
			return err
		}
		if args.Net != nil {
			cmd, err := dhcpdCmd(args.NICs[0], *args.Net)
			if err != nil {
				return err
			}
			dh := &helper{name: "dhcpd", cmd: cmd, log: log, exited: helperExit}
			if err := dh.start(r); err != nil {
				return err
			}
			helpers = append(helpers, dh)
		} else {
			log.Warn("the guest has a NIC but no -qubes-net argument: no DHCP server")
		}
	} else {
		log.Info("the guest has no network card")
	}

	if args.QEMU, err = bootFromDiscs(ctx, log, args.QEMU); err != nil {
		return err
	}

	state := cfg.devModelPath() + "/state"
	running, err := watchRunning(ctx, xs, state)
	if err != nil {
		return err
	}
	argv := dmargs.QEMUArgv(stubdom.QEMUPath, qmpSocket, args.QEMU)
	log.Info("starting QEMU", "argv", strings.Join(argv, " "))
	tm.qemuStart = uptime()
	qemu, err := r.Start(bootinit.Cmd{Path: argv[0], Args: argv, Env: []string{"PATH=/bin:/usr/bin", "HOME=/"}, Stdout: os.Stdout, Stderr: os.Stdout})
	if err != nil {
		return err
	}
	if err := waitSocket(ctx, qemu, qmpSocket, 60*time.Second); err != nil {
		return fmt.Errorf("QEMU: %w", err)
	}
	proxy := &helper{name: "qmp relay", log: log, exited: helperExit, cmd: bootinit.Cmd{
		Path:   stubdom.VchanProxyPath,
		Args:   []string{"vchan-socket-proxy", "--mode=server", "0", cfg.devModelPath() + "/qmp-vchan", qmpSocket},
		Env:    []string{"PATH=/bin:/usr/bin"},
		Stdout: os.Stdout, Stderr: os.Stdout,
	}}
	if err := proxy.start(r); err != nil {
		return err
	}
	helpers = append(helpers, proxy)

	exitCh := make(chan unix.WaitStatus, 1)
	go func() {
		<-qemu.Exited()
		ws, _ := qemu.Wait(ctx)
		exitCh <- ws
	}()
	for {
		select {
		case ws := <-exitCh:
			log.Info("QEMU exited", "status", bootinit.ExitCode(ws))
			for _, h := range helpers {
				h.stop()
			}
			return nil
		case <-running:
			running = nil
			tm.qemuRunning = uptime()
			total, avail := meminfo()
			log.Info("device model running",
				"kernel_s", fmt.Sprintf("%.3f", tm.initStart),
				"init_s", fmt.Sprintf("%.3f", tm.qemuStart-tm.initStart),
				"qemu_s", fmt.Sprintf("%.3f", tm.qemuRunning-tm.qemuStart),
				"mem_total_mib", total, "mem_available_mib", avail)
		case h := <-helperExit:
			h.restart(r)
		}
	}
}

// helper is a process the stubdomain keeps running next to QEMU.
type helper struct {
	name     string
	cmd      bootinit.Cmd
	log      *slog.Logger
	exited   chan<- *helper // gets the helper when its process exits
	proc     *bootinit.Proc
	restarts int
}

func (h *helper) start(r *bootinit.Reaper) error {
	p, err := r.Start(h.cmd)
	if err != nil {
		return fmt.Errorf("start %s: %w", h.name, err)
	}
	h.proc = p
	h.log.Info("started "+h.name, "pid", p.Pid)
	go func() {
		<-p.Exited()
		h.exited <- h
	}()
	return nil
}

// restart starts the helper again after it exited, unless it has done so
// too often.
func (h *helper) restart(r *bootinit.Reaper) {
	ws, _ := h.proc.Wait(context.Background())
	if h.restarts >= maxRestarts {
		h.log.Error(h.name+" exited too often; leaving it stopped", "status", bootinit.ExitCode(ws))
		return
	}
	h.restarts++
	h.log.Warn(h.name+" exited; restarting", "status", bootinit.ExitCode(ws), "restart", h.restarts)
	time.Sleep(restartDelay)
	if err := h.start(r); err != nil {
		h.log.Error(err.Error())
	}
}

func (h *helper) stop() {
	if h.proc != nil {
		_ = h.proc.Signal(unix.SIGTERM, false)
	}
}

// watchRunning returns a channel closed once QEMU has written "running" to
// its state key, which is when libxl considers the device model started.
func watchRunning(ctx context.Context, xs *xenstore.Client, path string) (<-chan struct{}, error) {
	w, err := xs.Watch(ctx, path)
	if err != nil {
		return nil, fmt.Errorf("watch %s: %w", path, err)
	}
	ch := make(chan struct{})
	go func() {
		defer w.Unwatch(context.Background())
		for range w.Events() {
			if v, err := xs.ReadString(ctx, path); err == nil && v == "running" {
				close(ch)
				return
			}
		}
	}()
	return ch, nil
}

// bootFromDiscs returns QEMU's arguments for a guest that boots a dom0
// kernel (-kernel): libxl named dom0's files, qvm gave them to the
// stubdomain as disks, which are copied to its memory (QEMU maps the
// initramfs, which a block device refuses, and reads the kernel whole)
// and named instead. Other arguments come back as they are.
func bootFromDiscs(ctx context.Context, log *slog.Logger, qemu []string) ([]string, error) {
	boot := dmargs.BootOf(qemu)
	if !boot.Kernel {
		return qemu, nil
	}
	kdev, idev := "/dev/"+dmargs.BootKernelVdev, "/dev/"+dmargs.BootInitramfsVdev
	devs := []string{kdev}
	if boot.Initramfs {
		devs = append(devs, idev)
	}
	files := map[string]string{kdev: bootDir + "/vmlinuz", idev: bootDir + "/initramfs"}
	if err := os.MkdirAll(bootDir, 0o700); err != nil {
		return nil, err
	}
	for _, d := range devs {
		if err := waitDevice(ctx, d, 30*time.Second); err != nil {
			return nil, fmt.Errorf("the guest boots a dom0 kernel, but its disc is missing: %w (was the VM started by qvm?)", err)
		}
		if err := copyDevice(d, files[d], maxBootFile); err != nil {
			return nil, err
		}
	}
	_, avail := meminfo()
	log.Info("booting the guest's kernel from discs", "kernel", kdev, "initramfs", boot.Initramfs, "mem_available_mib", avail)
	return dmargs.BootFromDiscs(qemu, files[kdev], files[idev]), nil
}

// bootDir holds the copies of the kernel and initramfs of a guest that
// boots a dom0 kernel (in the stubdomain's memory: /run is a tmpfs).
const bootDir = "/run/qvm-boot"

// maxBootFile bounds what is copied of a boot disc: more than the
// stubdomain's memory in any case.
const maxBootFile = 256 << 20

// copyDevice copies the block device src (a disc qvm made: the file,
// zero-padded) to the file dst, up to max bytes.
func copyDevice(src, dst string, max int64) error {
	in, err := os.Open(src)
	if err != nil {
		return fmt.Errorf("boot disc: %w", err)
	}
	defer in.Close()
	out, err := os.OpenFile(dst, os.O_WRONLY|os.O_CREATE|os.O_TRUNC, 0o600)
	if err != nil {
		return fmt.Errorf("boot disc %s: %w", src, err)
	}
	n, err := io.Copy(out, io.LimitReader(in, max+1))
	if cerr := out.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return fmt.Errorf("copy boot disc %s: %w", src, err)
	}
	if n > max {
		return fmt.Errorf("boot disc %s holds more than %d MiB", src, max>>20)
	}
	return nil
}

// waitDevice waits until the block device path exists (blkfront makes
// it once the disk's backend connects).
func waitDevice(ctx context.Context, path string, limit time.Duration) error {
	deadline := time.Now().Add(limit)
	for {
		fi, err := os.Stat(path)
		if err == nil && fi.Mode()&os.ModeDevice != 0 {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("%s did not appear within %v", path, limit)
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(50 * time.Millisecond):
		}
	}
}

// waitSocket waits until QEMU has made its QMP socket, failing early if
// QEMU exits.
func waitSocket(ctx context.Context, p *bootinit.Proc, path string, limit time.Duration) error {
	ctx, cancel := context.WithTimeout(ctx, limit)
	defer cancel()
	for {
		if fi, err := os.Stat(path); err == nil && fi.Mode()&os.ModeSocket != 0 {
			return nil
		}
		select {
		case <-p.Exited():
			ws, _ := p.Wait(ctx)
			return fmt.Errorf("exited with status %d before making its QMP socket %s", bootinit.ExitCode(ws), path)
		case <-ctx.Done():
			return fmt.Errorf("no QMP socket %s after %s", path, limit)
		case <-time.After(20 * time.Millisecond):
		}
	}
}

// uptime is the kernel's uptime in seconds, or 0 before /proc is mounted.
func uptime() float64 {
	b, err := os.ReadFile("/proc/uptime")
	if err != nil {
		return 0
	}
	f, _, _ := strings.Cut(string(b), " ")
	v, _ := strconv.ParseFloat(f, 64)
	return v
}

// meminfo returns MemTotal and MemAvailable in MiB.
func meminfo() (total, avail int) {
	b, err := os.ReadFile("/proc/meminfo")
	if err != nil {
		return 0, 0
	}
	for _, line := range strings.Split(string(b), "\n") {
		f := strings.Fields(line)
		if len(f) < 2 {
			continue
		}
		kb, _ := strconv.Atoi(f[1])
		switch f[0] {
		case "MemTotal:":
			total = kb / 1024
		case "MemAvailable:":
			avail = kb / 1024
		}
	}
	return total, avail
}

// errNoSelf is returned when the init cannot find its own binary to start
// the DHCP server with.
var errNoSelf = errors.New("cannot find the stubdominit binary")

// selfPath is the binary to re-execute for the DHCP server.
func selfPath() (string, error) {
	p, err := os.Readlink(self)
	if err != nil {
		return "", fmt.Errorf("%w: %v", errNoSelf, err)
	}
	return filepath.Clean(p), nil
}
