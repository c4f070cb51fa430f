package lifecycle

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/qvm-project/qvm/dhcpd"
	"github.com/qvm-project/qvm/logfile"
	"github.com/qvm-project/qvm/store"
	"github.com/qvm-project/qvm/vm"
)

// qvm has no daemon: each domain qvm-start creates gets a monitor, a small
// process of the qvm binary that lives as long as the domain. It destroys
// the domain once the guest halts (every on_poweroff/on_reboot/on_crash of
// a qvm domain is "destroy"), serves the VM's DHCP when dom0 is its network
// backend, and removes the run files.
//
// qvm-start spawns the monitor before it builds the domain and hands it
// two descriptors: the VM's run lock (an flock on run/NAME.lock, which
// from then on the monitor holds for as long as the domain lives, so that
// no other start of the VM can begin) and a pipe on which qvm-start tells
// the domain's id and, once the guest runs, "running". If the pipe closes
// before "running" (qvm-start failed, or was killed at any point, even
// inside libxl), the monitor destroys what qvm-start was building and
// removes the run files: no paused domain is ever left behind.

// Verbs of the qvm binary that lifecycle runs.
const (
	MonitorVerb = "monitor"
	DHCPDVerb   = "dhcpd"
)

// HandoffFlag marks a monitor spawned by qvm-start: the run lock is on fd
// 3, the pipe from qvm-start on fd 4.
const HandoffFlag = "--handoff"

// Messages on the handoff pipe.
const (
	handoffDomid   = "domid"
	handoffRunning = "running"
	handoffDisc    = "disc"
	handoffConsole = "console"
)

// handoff is qvm-start's side of a monitor it spawned.
type handoff struct {
	name string
	w    *os.File // the pipe to the monitor
	lock *os.File // qvm-start's copy of the run lock
}

// spawnMonitor starts the monitor of a VM whose run lock this command
// holds, in its own session (it outlives qvm-start). Its standard output
// and error are appended to the VM's log until the monitor opens that log
// itself, bounded (see OpenLog). The handoff owns lock from now on.
func (m *Manager) spawnMonitor(name string, lock *os.File) (*handoff, error) {
	h := &handoff{name: name, lock: lock}
	logf, err := m.openLog(name)
	if err != nil {
		lock.Close()
		return nil, fmt.Errorf("monitor of %s: %w", name, err)
	}
	defer logf.Close()
	r, w, err := os.Pipe()
	if err != nil {
		lock.Close()
		return nil, fmt.Errorf("monitor of %s: %w", name, err)
	}
	defer r.Close()
	cmd := exec.Command(m.QVM, MonitorVerb, "--dir", m.Store.Dir(), HandoffFlag, name)
	cmd.Stdout, cmd.Stderr = logf, logf
	cmd.ExtraFiles = []*os.File{lock, r}
	// qvm-start's environment: the monitor logs debug lines only when the
	// user asked for them (QVM_DEBUG).
	cmd.SysProcAttr = &syscall.SysProcAttr{Setsid: true}
	if err := cmd.Start(); err != nil {
		w.Close()
		lock.Close()
		return nil, fmt.Errorf("start the monitor of %s: %w", name, err)
	}
	cmd.Process.Release()
	h.w = w
	return h, nil
}

// domid tells the monitor the domain's id.
func (h *handoff) domid(id uint32) error {
	if _, err := fmt.Fprintf(h.w, "%s %d\n", handoffDomid, id); err != nil {
		return fmt.Errorf("tell the monitor of %s its domain: %w", h.name, err)
	}
	return nil
}

// disc tells the monitor of a loop device a VM made for the run: the
// monitor asks the VM to detach it when the run ends, or when the start
// is abandoned.
func (h *handoff) disc(d servedDisc) error {
	if _, err := fmt.Fprintf(h.w, "%s %s\n", handoffDisc, d); err != nil {
		return fmt.Errorf("tell the monitor of %s its disc: %w", h.name, err)
	}
	return nil
}

// console tells the monitor the pseudo-terminal of the VM's console.
func (h *handoff) console(tty string) error {
	if _, err := fmt.Fprintf(h.w, "%s %s\n", handoffConsole, tty); err != nil {
		return fmt.Errorf("tell the monitor of %s its console: %w", h.name, err)
	}
	return nil
}

// running hands the domain over: the monitor alone holds the run lock
// from now on.
func (h *handoff) running() error {
	_, err := fmt.Fprintf(h.w, "%s\n", handoffRunning)
	h.w.Close()
	// Closed, never unlocked: the lock is the monitor's now.
	h.lock.Close()
	if err != nil {
		return fmt.Errorf("hand %s over to its monitor: %w", h.name, err)
	}
	return nil
}

// abort closes the pipe without "running": the monitor destroys what is
// left of the start and exits.
func (h *handoff) abort() error {
	h.w.Close()
	h.lock.Close()
	return nil
}

// LogLimit bounds a VM's log file: past it the log is rotated, so a VM's
// logs take at most twice this (NAME.log and NAME.log.1).
const LogLimit = 1 << 20

// logPath is VM name's log file.
func logPath(st *store.Store, name string) string { return filepath.Join(st.LogDir(), name+".log") }

// openLog opens a VM's log for appending, for a process that only
// inherits it (the monitor until it opens the log itself).
func (m *Manager) openLog(name string) (*os.File, error) {
	if err := os.MkdirAll(m.Store.LogDir(), 0o755); err != nil {
		return nil, fmt.Errorf("log directory: %w", err)
	}
	f, err := os.OpenFile(logPath(m.Store, name), os.O_WRONLY|os.O_CREATE|os.O_APPEND, 0o644)
	if err != nil {
		return nil, fmt.Errorf("log: %w", err)
	}
	return f, nil
}

// OpenLog opens the log of VM name in st's log directory as its monitor
// writes it: bounded to LogLimit, rotated to NAME.log.1 past it.
func OpenLog(st *store.Store, name string) (*logfile.File, error) {
	if err := os.MkdirAll(st.LogDir(), 0o755); err != nil {
		return nil, fmt.Errorf("log directory: %w", err)
	}
	return logfile.Open(logPath(st, name), LogLimit)
}

// responderLimits bound what the DHCP responder's output may put in the
// VM's log. The responder limits its own packet lines (a dozen a minute);
// these hold should it be compromised: a guest that took it over can add
// at most responderLimits.Burst short lines a minute, each marked as the
// responder's.
var responderLimits = logfile.Limits{MaxLine: 1024, Burst: 100, Interval: time.Minute}

// responderPrefix starts every line of the responder's output in the
// VM's log, so that none can pass for the monitor's.
const responderPrefix = "dhcpd: "

// RunMonitor is the monitor's work for domain domid of VM name: the DHCP
// responder when dom0 is the VM's backend, then Wait. It returns when the
// domain is gone (or ctx ends). Run by hand for a domain whose monitor was
// killed, it takes the VM's run lock itself. The responder's output comes
// through a pipe and goes to out (the VM's log, see OpenLog) as lines
// limited by responderLimits; nil out means standard error.
func (m *Manager) RunMonitor(ctx context.Context, name string, domid uint32, out io.Writer) error {
	lock, err := m.lockRun(name)
	if err != nil {
		return err
	}
	defer lock.Close()
	return m.watch(ctx, name, domid, "", out)
}

// RunHandoffMonitor is the work of a monitor qvm-start spawned: lock is
// the VM's run lock, from qvm-start the pipe r. It takes the domain over
// once qvm-start says it runs; if the pipe closes before that, it destroys
// what was being built (see the package comment). out is as for
// RunMonitor.
func (m *Manager) RunHandoffMonitor(ctx context.Context, name string, lock, r *os.File, out io.Writer) error {
	defer lock.Close()
	h, ok, err := readHandoff(r)
	r.Close()
	if err != nil {
		m.log().Warn("handoff from qvm-start", "vm", name, "err", err)
	}
	for _, d := range h.discs {
		defer m.detachDisc(ctx, d, discDetachWait)
	}
	if !ok {
		return m.abandoned(ctx, name, h.domid)
	}
	return m.watch(ctx, name, h.domid, h.console, out)
}

// handedOver is what qvm-start told its monitor.
type handedOver struct {
	domid   uint32
	discs   []servedDisc
	console string // the console's pseudo-terminal, if xenconsoled made one
}

// maxHandoffDiscs bounds the discs of one start (an HVM has one drive).
const maxHandoffDiscs = 4

// readHandoff reads qvm-start's messages: the domain's id and the discs
// VMs serve the run, then "running" (ok). A closed pipe before "running"
// ends it with ok false.
func readHandoff(r io.Reader) (h handedOver, ok bool, err error) {
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 256), 256)
	for sc.Scan() {
		f := strings.Fields(sc.Text())
		switch {
		case len(f) == 2 && f[0] == handoffDomid:
			n, err := strconv.ParseUint(f[1], 10, 16)
			if err != nil {
				return h, false, fmt.Errorf("bad domain id %q", f[1])
			}
			h.domid = uint32(n)
		case len(f) > 0 && f[0] == handoffDisc && len(h.discs) < maxHandoffDiscs:
			d, err := parseServedDisc(f[1:])
			if err != nil {
				return h, false, err
			}
			h.discs = append(h.discs, d)
		case len(f) == 2 && f[0] == handoffConsole:
			h.console = f[1]
		case len(f) == 1 && f[0] == handoffRunning && h.domid != 0:
			return h, true, nil
		default:
			return h, false, fmt.Errorf("unexpected message %q", sc.Text())
		}
	}
	return h, false, sc.Err()
}

// abandoned cleans up after a start that did not finish: the domain it
// built (by id, or, when qvm-start died before telling it, by the VM's
// name: the run lock guarantees no other start of the VM runs) is
// destroyed, and the run files removed.
func (m *Manager) abandoned(ctx context.Context, name string, domid uint32) error {
	hyp, err := m.hypervisor()
	if err != nil {
		return err
	}
	if domid == 0 {
		if id, err := m.domainByName(ctx, name); err == nil {
			domid = id
		}
	}
	if domid != 0 {
		if _, alive, err := domainState(ctx, hyp, domid); err == nil && alive {
			m.log().Warn("qvm-start ended before the guest ran: destroying its domain", "vm", name, "domid", domid)
			if err := destroy(ctx, hyp, domid); err != nil {
				return fmt.Errorf("destroy the domain %d of an unfinished start of %s: %w", domid, name, err)
			}
		}
	}
	if sys, err := m.Store.Load(); err == nil {
		sys.Host = m.Host
		if v, err := sys.View(name); err == nil {
			m.removeRunFiles(v)
		}
	}
	return nil
}

// watch serves and waits for a running domain: its console on tty (""
// for none), DHCP, qrexec.
func (m *Manager) watch(ctx context.Context, name string, domid uint32, tty string, out io.Writer) error {
	if out == nil {
		out = os.Stderr
	}
	// An HVM's console socket is qvm-stubdom-dm's, which cannot remove
	// it once unprivileged; a PV one's server removes its own.
	defer removeIfExists(ConsoleSocketPath(m.Store, name))
	if tty != "" {
		if stopConsole, err := m.serveConsole(ctx, name, tty); err != nil {
			m.log().Warn("no console for the VM", "vm", name, "err", err)
		} else {
			defer stopConsole()
		}
	}
	stop := m.startBackendDHCP(name, domid, out)
	defer stop()
	if stopQrexec, err := m.serveQrexec(ctx, name, domid, agentWait); err != nil {
		m.log().Warn("no qrexec for the VM", "vm", name, "err", err)
	} else {
		defer stopQrexec()
	}
	m.log().Info("watching domain", "vm", name, "domid", domid)
	reason, err := m.Wait(ctx, name, domid)
	if err != nil {
		return err
	}
	m.log().Info("VM halted", "vm", name, "domid", domid, "reason", string(reason))
	return nil
}

// BackendDHCP is the responder a VM needs from dom0: when dom0 is its
// network backend and it is not an HVM (an HVM's stubdomain answers on its
// own bridge), its lease on its backend interface vifDOMID.0. ok is false
// when dom0 serves the VM no DHCP.
func BackendDHCP(v *vm.View, domid uint32) (cfg dhcpd.Config, ok bool, err error) {
	if n := v.NetVM(); n == nil || n.Class() != vm.AdminVM || v.VirtMode() == vm.HVM {
		return cfg, false, nil
	}
	l := dhcpd.Lease{Hostname: v.Name()}
	if l.MAC, err = dhcpd.ParseMAC(v.Str("mac")); err != nil {
		return cfg, false, err
	}
	if l.IP, err = dhcpd.ParseIPv4("ip", v.Str("visible_ip")); err != nil {
		return cfg, false, err
	}
	if l.Gateway, err = dhcpd.ParseIPv4("gateway", v.Str("visible_gateway")); err != nil {
		return cfg, false, err
	}
	if l.Netmask, err = dhcpd.ParseNetmask(v.Str("visible_netmask")); err != nil {
		return cfg, false, err
	}
	if l.DNS, err = dhcpd.ParseIPv4List("dns", vm.PrimaryDNS+","+vm.SecondaryDNS); err != nil {
		return cfg, false, err
	}
	return dhcpd.Config{Interface: fmt.Sprintf("vif%d.0", domid), Lease: l}, true, nil
}

// startBackendDHCP runs `qvm dhcpd` for the VM when BackendDHCP says dom0
// serves it, so that a guest without Qubes agents (an installer, Windows)
// gets its address. Its output goes to out (see RunMonitor). It returns a
// function that stops the responder.
func (m *Manager) startBackendDHCP(name string, domid uint32, out io.Writer) (stop func()) {
	stop = func() {}
	// The definitions only: the hypervisor need not be asked again.
	sys, err := m.Store.Load()
	if err != nil {
		m.log().Warn("no DHCP responder: cannot read the definitions", "vm", name, "err", err)
		return stop
	}
	sys.Host = m.Host
	v, err := sys.View(name)
	if err != nil {
		m.log().Warn("no DHCP responder", "vm", name, "err", err)
		return stop
	}
	cfg, ok, err := BackendDHCP(v, domid)
	if err != nil {
		m.log().Warn("no DHCP responder: the VM's network settings", "vm", name, "err", err)
		return stop
	}
	if !ok {
		return stop
	}
	if m.QVM == "" {
		m.log().Warn("no DHCP responder: no qvm binary to run it", "vm", name)
		return stop
	}
	// The responder dies with its monitor: a killed monitor leaves none.
	// The signal follows the thread that started it, so that thread is
	// kept for the responder's life; the responder sets it again once it
	// has changed user, which clears it (--die-with-parent).
	cfg.DieWithParent = true
	cmd := exec.Command(m.QVM, append([]string{DHCPDVerb}, cfg.Args()...)...)
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	started, done := make(chan error, 1), make(chan struct{})
	go func() {
		runtime.LockOSThread()
		wait, err := startLogged(cmd, out, responderPrefix, responderLimits)
		started <- err
		if err == nil {
			if err := wait(); err != nil {
				m.log().Info("DHCP responder ended", "vm", name, "interface", cfg.Interface, "err", err)
			}
		}
		close(done)
	}()
	if err := <-started; err != nil {
		m.log().Warn("DHCP responder did not start", "vm", name, "interface", cfg.Interface, "err", err)
		return stop
	}
	return func() {
		cmd.Process.Signal(syscall.SIGTERM)
		<-done
	}
}

// startLogged starts cmd, a child whose output is not to be trusted, with
// its standard output and error on one pipe that the returned wait drains
// into out as lines bounded by lim, each starting with prefix. The child
// gets this process's environment without QVM_DEBUG: its log level is
// its own (a responder at debug level would log every packet it answers).
// wait waits for the child and for the last of its output.
func startLogged(cmd *exec.Cmd, out io.Writer, prefix string, lim logfile.Limits) (wait func() error, err error) {
	lw := logfile.NewLineWriter(out, prefix, lim)
	// One writer for both: exec then copies them from a single pipe, in
	// one goroutine, and Wait returns once it has drained.
	cmd.Stdout, cmd.Stderr = lw, lw
	// Bound the wait for the pipe should the child leave a descendant
	// holding it (it cannot: the responder sandboxes itself).
	cmd.WaitDelay = 5 * time.Second
	if cmd.Env == nil {
		cmd.Env = os.Environ()
	}
	cmd.Env = slices.DeleteFunc(cmd.Env, func(kv string) bool { return strings.HasPrefix(kv, "QVM_DEBUG=") })
	if err := cmd.Start(); err != nil {
		return nil, err
	}
	return func() error {
		err := cmd.Wait()
		lw.Close()
		return err
	}, nil
}
