package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/qvm-project/qvm/bootinit"
	"github.com/qvm-project/qvm/e2e/hostjob"
	"github.com/u-root/u-root/pkg/cmdline"
	"golang.org/x/sys/unix"
)

// Where Debian's Xen 4.17 userspace lives in the image.
const (
	xenBin         = "/usr/lib/xen-4.17/bin"
	xenstoredPath  = xenBin + "/xenstored"
	xenInitDom0    = xenBin + "/xen-init-dom0"
	xenconsoled    = xenBin + "/xenconsoled"
	xenstoreSocket = "/run/xenstored/socket"
	qvmPath        = "/bin/qvm"
	hotplugPath    = "/bin/qvm-hotplug"
)

// envPath is the PATH of every process dom0init starts.
const envPath = "PATH=/bin:/bbin:/usr/bin:/usr/sbin:/sbin:" + xenBin

// dom0Modules are the kernel modules dom0 needs, in load order
// (xen-privcmd before xenfs).
var dom0Modules = []bootinit.Module{
	{Name: "xen-evtchn"},
	{Name: "xen-privcmd"},
	{Name: "xen-gntdev"},
	{Name: "xen-gntalloc"},
	{Name: "xenfs"},
	{Name: "xen-blkback"},
	{Name: "xen-netback"},
	{Name: "loop"},
	{Name: "bridge"},
	{Name: "tun"},
	// nftables for the filter on VM interfaces (package vmfirewall);
	// crc32c_generic first: libcrc32c (under nf_conntrack) asks the
	// crypto API for crc32c, and nothing here would autoload it.
	{Name: "crc32c_generic"},
	{Name: "nf_tables"},
	{Name: "nft_ct"},
}

// shareModules give dom0 the virtio 9p share of the host.
var shareModules = []bootinit.Module{
	{Name: "virtio_pci"},
	{Name: "9pnet_virtio"},
	{Name: "9p"},
}

// xlConf is /etc/xen/xl.conf: dom0's memory is fixed by dom0_mem, so libxl
// must not balloon it.
const xlConf = `# written by dom0init
autoballoon="off"
`

func run(ctx context.Context, c *console) error {
	c.say("starting")
	if err := bootinit.MountAll(bootinit.BaseMounts()); err != nil {
		return err
	}
	os.Setenv("PATH", strings.TrimPrefix(envPath, "PATH="))
	os.Setenv("HOME", "/root")
	cl := cmdline.NewCmdLine()
	if cl.Err != nil {
		return fmt.Errorf("read kernel command line: %w", cl.Err)
	}
	act, err := parseAction(cl)
	if err != nil {
		return fmt.Errorf("kernel command line: %w", err)
	}
	c.say("mounted /proc /sys /dev /run /tmp; loading Xen modules")
	if err := bootinit.LoadModules(dom0Modules); err != nil {
		return err
	}
	if err := (bootinit.Mount{Source: "xenfs", Target: "/proc/xen", FSType: "xenfs"}).Do(); err != nil {
		return err
	}
	if err := makeDirs(); err != nil {
		return err
	}
	if act.share != "" {
		if err := mountShare(ctx, act.share); err != nil {
			return err
		}
		c.say("mounted host share %q on %s", act.share, shareMount)
	}

	r := bootinit.NewReaper()
	defer r.Close()
	if err := startXen(ctx, c, r); err != nil {
		return err
	}
	for _, bin := range []string{qvmPath, hotplugPath} {
		if err := linkCommands(ctx, r, bin); err != nil {
			c.say("warning: %v", err)
		}
	}
	ready := uptime()
	c.say("ready: dom0 up in %.2f s", ready)

	switch act.kind {
	case actNone:
		return nil
	case actShell:
		return runShell(ctx, c, r)
	case actExec:
		code, err := runCommand(ctx, r, act.argv, nil, "/", c)
		if err != nil {
			return err
		}
		c.say("command %s exited with status %d", act.argv[0], code)
		return nil
	case actJob:
		return runJob(ctx, c, r, act.echo, ready)
	}
	return fmt.Errorf("unknown action %d", act.kind)
}

// makeDirs creates what Xen's tools expect to find in dom0.
func makeDirs() error {
	for _, d := range []string{"/var/lib/xen", "/var/lib/xenstored", "/var/log/xen/console", "/run/xen", "/run/xenstored", "/run/lock", "/etc/xen", "/root", shareMount} {
		if err := os.MkdirAll(d, 0o755); err != nil {
			return fmt.Errorf("create %s: %w", d, err)
		}
	}
	for link, target := range map[string]string{"/var/run": "/run", "/var/lock": "/run/lock"} {
		if _, err := os.Lstat(link); err == nil {
			continue
		}
		if err := os.Symlink(target, link); err != nil {
			return fmt.Errorf("create %s: %w", link, err)
		}
	}
	if _, err := os.Stat("/etc/xen/xl.conf"); errors.Is(err, os.ErrNotExist) {
		if err := os.WriteFile("/etc/xen/xl.conf", []byte(xlConf), 0o644); err != nil {
			return fmt.Errorf("write /etc/xen/xl.conf: %w", err)
		}
	}
	return nil
}

// mountShare mounts the host's virtio 9p share. The virtio device may
// appear a moment after its driver loads, so the mount is retried.
func mountShare(ctx context.Context, tag string) error {
	if err := bootinit.LoadModules(shareModules); err != nil {
		return err
	}
	m := bootinit.Mount{Source: tag, Target: shareMount, FSType: "9p", Data: "trans=virtio,version=9p2000.L,msize=512000"}
	var err error
	for i := 0; i < 50; i++ {
		if err = m.Do(); err == nil {
			return nil
		}
		if !sleep(ctx, 200*time.Millisecond) {
			break
		}
	}
	return fmt.Errorf("host share %q: %w", tag, err)
}

// startXen starts xenstored, initialises dom0's keys and starts xenconsoled.
func startXen(ctx context.Context, c *console, r *bootinit.Reaper) error {
	log, err := os.OpenFile("/var/log/xen/xenstored.log", os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		return err
	}
	defer log.Close()
	xs, err := r.Start(bootinit.Cmd{Path: xenstoredPath, Args: []string{"xenstored", "--no-fork", "--pid-file", "/run/xenstored.pid"}, Env: env(nil), Stdout: log, Stderr: log})
	if err != nil {
		return err
	}
	if err := waitSocket(ctx, xs, xenstoreSocket, 60*time.Second); err != nil {
		return fmt.Errorf("xenstored: %w (log: %s)", err, tail("/var/log/xen/xenstored.log"))
	}
	c.say("xenstored running (pid %d)", xs.Pid)
	// Nothing in dom0 works without it: its death goes on the console
	// with the end of its log, for the log of whatever then fails.
	go func() {
		ws, err := xs.Wait(context.WithoutCancel(ctx))
		if err == nil {
			how := fmt.Sprintf("exit status %d", ws.ExitStatus())
			if ws.Signaled() {
				how = "signal " + ws.Signal().String()
			}
			c.say("xenstored (pid %d) exited (%s); its log ends: %s", xs.Pid, how, tail("/var/log/xen/xenstored.log"))
		}
	}()

	initLog, err := os.Create("/var/log/xen/xen-init-dom0.log")
	if err != nil {
		return err
	}
	defer initLog.Close()
	ictx, cancel := context.WithTimeout(ctx, 60*time.Second)
	defer cancel()
	if err := r.Run(ictx, bootinit.Cmd{Path: xenInitDom0, Env: env(nil), Stdout: initLog, Stderr: initLog}); err != nil {
		return fmt.Errorf("xen-init-dom0: %w (log: %s)", err, tail("/var/log/xen/xen-init-dom0.log"))
	}
	c.say("xen-init-dom0 done")

	clog, err := os.OpenFile("/var/log/xen/xenconsoled.log", os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		return err
	}
	defer clog.Close()
	xc, err := r.Start(bootinit.Cmd{Path: xenconsoled, Args: []string{"xenconsoled", "-i", "--log=guest", "--log-dir=/var/log/xen/console", "--pid-file=/run/xenconsoled.pid"}, Env: env(nil), Stdout: clog, Stderr: clog})
	if err != nil {
		return err
	}
	// xenconsoled has no readiness signal; one that dies at once is caught here.
	select {
	case <-xc.Exited():
		return fmt.Errorf("xenconsoled exited at start (log: %s)", tail("/var/log/xen/xenconsoled.log"))
	case <-time.After(300 * time.Millisecond):
	}
	c.say("xenconsoled running (pid %d)", xc.Pid)
	return nil
}

// waitSocket waits until a unix socket accepts connections, failing early
// if the process that should serve it exits.
func waitSocket(ctx context.Context, p *bootinit.Proc, path string, limit time.Duration) error {
	ctx, cancel := context.WithTimeout(ctx, limit)
	defer cancel()
	for {
		if conn, err := net.Dial("unix", path); err == nil {
			conn.Close()
			return nil
		}
		select {
		case <-p.Exited():
			return fmt.Errorf("exited before serving %s", path)
		case <-ctx.Done():
			return fmt.Errorf("%s not served after %s", path, limit)
		case <-time.After(100 * time.Millisecond):
		}
	}
}

// linkCommands makes the links a multi-call binary lists with
// --list-links: the qvm-VERB links of qvm, libxl's hotplug scripts of
// qvm-hotplug.
func linkCommands(ctx context.Context, r *bootinit.Reaper, bin string) error {
	if _, err := os.Stat(bin); err != nil {
		return fmt.Errorf("no %s in this image: %w", filepath.Base(bin), err)
	}
	pr, pw, err := os.Pipe()
	if err != nil {
		return err
	}
	defer pr.Close()
	p, err := r.Start(bootinit.Cmd{Path: bin, Args: []string{filepath.Base(bin), "--list-links"}, Env: env(nil), Stdout: pw})
	pw.Close()
	if err != nil {
		return err
	}
	out, _ := io.ReadAll(io.LimitReader(pr, 1<<16))
	ws, err := p.Wait(ctx)
	if err != nil {
		return err
	}
	if code := bootinit.ExitCode(ws); code != 0 {
		return fmt.Errorf("%s --list-links exited with status %d", bin, code)
	}
	// A link is a command beside the binary, or an absolute path
	// (libxl's hotplug scripts in /etc/xen/scripts).
	for _, l := range strings.Fields(string(out)) {
		link, target := filepath.Join(filepath.Dir(bin), l), filepath.Base(bin)
		if filepath.IsAbs(l) {
			link, target = l, bin
			if err := os.MkdirAll(filepath.Dir(link), 0o755); err != nil {
				return err
			}
		}
		if err := os.Symlink(target, link); err != nil && !errors.Is(err, os.ErrExist) {
			return fmt.Errorf("link %s: %w", link, err)
		}
	}
	return nil
}

// runShell runs an interactive shell on the Xen console.
func runShell(ctx context.Context, c *console, r *bootinit.Reaper) error {
	tty, err := os.OpenFile("/dev/hvc0", os.O_RDWR, 0)
	if err != nil {
		return fmt.Errorf("open console for the shell: %w", err)
	}
	defer tty.Close()
	c.say("shell on hvc0; exit it to power off")
	p, err := r.Start(bootinit.Cmd{Path: "/bin/sh", Env: env(nil), Dir: "/", Stdin: tty, Stdout: tty, Stderr: tty, Setsid: true, Ctty: true})
	if err != nil {
		return err
	}
	_, err = p.Wait(ctx)
	return err
}

// runCommand runs argv with its output (stdout and stderr) copied to out,
// and returns its exit code. The command runs in its own session; whatever
// it leaves running in that session is killed when it exits.
func runCommand(ctx context.Context, r *bootinit.Reaper, argv, extraEnv []string, dir string, out io.Writer) (int, error) {
	pr, pw, err := os.Pipe()
	if err != nil {
		return -1, err
	}
	defer pr.Close()
	p, err := r.Start(bootinit.Cmd{Path: argv[0], Args: argv, Env: env(extraEnv), Dir: dir, Stdout: pw, Stderr: pw, Setsid: true})
	pw.Close()
	if err != nil {
		return -1, err
	}
	copied := make(chan struct{})
	go func() {
		defer close(copied)
		_, _ = io.Copy(out, pr)
	}()
	ws, err := p.Wait(ctx)
	if err != nil {
		return -1, err
	}
	// A daemon the command started may still hold the pipe open.
	select {
	case <-copied:
	case <-time.After(3 * time.Second):
		pr.Close()
		<-copied
	}
	_ = p.Signal(unix.SIGKILL, true)
	return bootinit.ExitCode(ws), nil
}

// runJob runs the job of the host share and writes its output and status
// back into the share.
func runJob(ctx context.Context, c *console, r *bootinit.Reaper, echo bool, ready float64) error {
	st := hostjob.Status{ExitCode: -1, ReadySeconds: ready}
	j, err := hostjob.ReadJob(shareMount)
	if err != nil {
		st.Error = err.Error()
		_ = hostjob.WriteStatus(shareMount, st)
		return fmt.Errorf("read job: %w", err)
	}
	if err := os.MkdirAll(filepath.Join(shareMount, hostjob.OutDir), 0o755); err != nil {
		return fmt.Errorf("job output: %w", err)
	}
	out, err := os.Create(filepath.Join(shareMount, hostjob.OutputFile))
	if err != nil {
		return fmt.Errorf("job output: %w", err)
	}
	defer out.Close()
	var w io.Writer = out
	if echo {
		w = io.MultiWriter(out, c)
	}
	dir := j.Dir
	if dir == "" {
		dir = shareMount
	}
	c.say("job: running %q", j.Argv)
	start := time.Now()
	code, err := runCommand(ctx, r, j.Argv, j.Env, dir, w)
	st.RunSeconds = time.Since(start).Seconds()
	st.ExitCode = code
	if err != nil {
		st.Error = err.Error()
	}
	if err := out.Sync(); err != nil {
		c.say("warning: sync job output: %v", err)
	}
	if err := hostjob.WriteStatus(shareMount, st); err != nil {
		return fmt.Errorf("write job status: %w", err)
	}
	c.say("job: exited with status %d after %.2f s", code, st.RunSeconds)
	return nil
}

// env is the environment of the processes dom0init starts.
func env(extra []string) []string {
	return append([]string{envPath, "HOME=/root", "TERM=linux"}, extra...)
}

// tail returns the end of a log file for an error message.
func tail(path string) string {
	b, err := os.ReadFile(path)
	if err != nil {
		return err.Error()
	}
	s := strings.TrimSpace(string(b))
	if len(s) > 500 {
		s = "..." + s[len(s)-500:]
	}
	if s == "" {
		return "empty"
	}
	return strings.ReplaceAll(s, "\n", " | ")
}

func sleep(ctx context.Context, d time.Duration) bool {
	select {
	case <-ctx.Done():
		return false
	case <-time.After(d):
		return true
	}
}
