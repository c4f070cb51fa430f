package dhcpd

import (
	"fmt"
	"log/slog"
	"os"
	"runtime"
	"syscall"
	"time"
	"unsafe"

	seccomp "github.com/elastic/go-seccomp-bpf"
	"golang.org/x/sys/unix"
)

// Each sandboxed server runs as a user and group of its own, so that a
// compromised one cannot signal, trace or read another (or anything else
// on the host) even where the seccomp filter would let it try. The
// numbers are UIDBase + the interface's index modulo UIDCount, which
// needs no user database and no allocation: interface indexes are unique
// within a network namespace, so two servers on one host (dom0 runs one
// per VM, all in its namespace) never share one.
//
// The range 0x7FF00000-0x7FFD7FFF (2146435072-2147319807) is one that no
// user database, distribution or common tool assigns: above the 16-bit
// users (adduser, systemd's dynamic users 61184-65519, nobody 65534),
// above systemd-nspawn's container ranges (up to 0x6FFFFFFF) and the
// default subordinate IDs of useradd (100000-600100000), LXD/Incus
// (1000000-1001000000) and SSSD's Active Directory ID mapping
// (200000-2000200000), below systemd's foreign UID range
// (0x7FFE0000-0x7FFEFFFF) and below 2^31, where some programs and kernel
// interfaces mishandle IDs (see https://systemd.io/UIDS-GIDS/). It holds
// 884736 IDs: an index past that wraps around, which would take that many
// interfaces created since boot for two live ones to meet. The 32768 IDs
// above it, up to 0x7FFDFFFF, are the stubdomain console servers' (one per
// domain ID: package consback).
const (
	UIDBase  = 0x7FF00000
	UIDCount = 0x7FFD8000 - UIDBase
)

// UserFor is the user and group ID of the server on the interface with
// index ifindex.
func UserFor(ifindex int) int {
	return UIDBase + ((ifindex%UIDCount)+UIDCount)%UIDCount
}

// maxWritable bounds the descriptors the filter lets the process write
// to (see writableFDs), and so the filter's length.
const maxWritable = 64

// allowedSyscalls are the system calls a sandboxed server may make with
// any arguments: the serve loop's (recvfrom; close at shutdown) and those
// the Go runtime makes while it runs (thread creation, scheduling,
// memory, signals for preemption, the network poller). They were found
// with strace -f running the real-client tests, plus the runtime's own
// list (runtime/sys_linux_amd64.s). Nothing here can open a file, create
// a socket, run a program or change privileges. write, sendto, kill and
// tgkill are allowed on some arguments only (see seccompPolicy).
func allowedSyscalls() []string {
	return []string{
		// serve loop
		"recvfrom", "read", "close",
		// network poller
		"epoll_pwait", "epoll_wait", "epoll_ctl",
		// scheduler, locks, timers
		"futex", "nanosleep", "clock_nanosleep", "sched_yield", "clock_gettime", "gettimeofday", "restart_syscall",
		// memory
		"mmap", "munmap", "madvise", "mprotect",
		// signals
		"rt_sigaction", "rt_sigprocmask", "rt_sigreturn", "sigaltstack", "getpid", "gettid",
		// threads (clone is further limited to CLONE_THREAD below); glibc's
		// thread start in cgo programs
		"set_robust_list", "rseq",
		// exit
		"exit", "exit_group",
	}
}

// SandboxConfig says what Sandbox confines a process to.
type SandboxConfig struct {
	// Ifindex is the index of the interface the process serves: a root
	// process becomes user and group UserFor(Ifindex).
	Ifindex int
	// SendFD is the one socket the process may send on, with sendto and
	// no destination address (a packet socket then sends on the interface
	// it is bound to); -1 for none.
	SendFD int
	// ParentDeathSignal, when not 0, is the signal the process gets when
	// its parent exits. Changing user clears the kernel's parent-death
	// signal (prctl(2) PR_SET_PDEATHSIG, which exec.Cmd's Pdeathsig
	// sets), so Sandbox sets it again once it has; a parent that exited
	// before that makes Sandbox fail.
	ParentDeathSignal syscall.Signal
}

// Sandbox confines the whole process, irreversibly:
//
//  1. It fixes GOMAXPROCS, so the runtime stops re-reading cgroup files,
//     and loads the local time zone, which log timestamps need.
//  2. A root process becomes user and group UserFor(c.Ifindex), its own,
//     with no supplementary groups; that clears every capability on every
//     thread. A non-root process drops whatever capabilities it has.
//     Either way it checks that none is left.
//  3. It sets no_new_privs and installs a seccomp filter on all threads
//     (TSYNC) that allows only allowedSyscalls, and on some arguments
//     only: write to the descriptors open now that are not sockets, plus
//     standard output and error (logs; the runtime's poller wake-up);
//     sendto only on c.SendFD and with no address; kill and tgkill only
//     to this process; clone only for threads. Any other system call,
//     including these with other arguments, kills the whole process with
//     SIGSYS (SECCOMP_RET_KILL_PROCESS); the process cannot log that
//     itself, but the kernel's audit log records it (type=SECCOMP,
//     sig=31, with the call's number) and the parent sees the process die
//     of SIGSYS. Nothing that creates a descriptor is allowed, so the
//     descriptor numbers the filter names cannot be reused for others.
//
// Serve calls it once its sockets are bound; it is exported so that a
// program embedding the server can call it at the same point itself.
func Sandbox(log *slog.Logger, c SandboxConfig) error {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	runtime.GOMAXPROCS(runtime.GOMAXPROCS(0))
	// Load what the standard library reads from files lazily, while files
	// can still be opened: the local time zone (log timestamps).
	_, _ = time.Now().Local().Zone()
	ppid := os.Getppid()
	if err := dropPrivileges(UserFor(c.Ifindex)); err != nil {
		return fmt.Errorf("sandbox: %w", err)
	}
	if c.ParentDeathSignal != 0 {
		// On this thread: the kernel signals the whole process when any
		// of its threads has the setting, and Go never ends this one.
		if err := unix.Prctl(unix.PR_SET_PDEATHSIG, uintptr(c.ParentDeathSignal), 0, 0, 0); err != nil {
			return fmt.Errorf("sandbox: set the parent-death signal again: %w", err)
		}
		if os.Getppid() != ppid {
			return fmt.Errorf("sandbox: the parent process (%d) exited", ppid)
		}
	}
	uid, gid := os.Getuid(), os.Getgid() // getuid(2) is not allowed later
	writable, err := writableFDs()
	if err != nil {
		return fmt.Errorf("sandbox: %w", err)
	}
	p := policy{pid: os.Getpid(), writable: writable, sendFD: c.SendFD}
	n, err := installSeccomp(p)
	if err != nil {
		return fmt.Errorf("sandbox: %w", err)
	}
	log.Info(fmt.Sprintf("seccomp filter installed: %d syscalls allowed; any other syscall kills this process (SIGSYS, see the kernel audit log)", n),
		"uid", uid, "gid", gid, "write_fds", fmt.Sprint(writable), "send_fd", c.SendFD)
	return nil
}

// writableFDs are the descriptors the process may write to once
// sandboxed: standard output and error, and every other open descriptor
// that is not a socket (the Go runtime's poller wake-up eventfd, whose
// number the runtime does not tell). Sockets, the server's own and any
// inherited, are left out: sending is sendto's, on one socket.
func writableFDs() ([]int, error) {
	var lim unix.Rlimit
	if err := unix.Getrlimit(unix.RLIMIT_NOFILE, &lim); err != nil {
		return nil, fmt.Errorf("descriptor limit: %w", err)
	}
	top := int(min(lim.Cur, 4096))
	var fds []int
	for fd := 0; fd < top; fd++ {
		var st unix.Stat_t
		if err := unix.Fstat(fd, &st); err != nil {
			if err == unix.EBADF {
				continue
			}
			return nil, fmt.Errorf("descriptor %d: %w", fd, err)
		}
		if fd == 1 || fd == 2 || st.Mode&unix.S_IFMT != unix.S_IFSOCK {
			fds = append(fds, fd)
		}
	}
	if len(fds) > maxWritable {
		return nil, fmt.Errorf("%d descriptors open (%v...): start the server with only standard input, output and error open", len(fds), fds[:8])
	}
	return fds, nil
}

// dropPrivileges leaves the process with no capability on any thread.
func dropPrivileges(id int) error {
	if os.Geteuid() == 0 || os.Getuid() == 0 {
		// Go applies these to every thread of the process.
		if err := syscall.Setgroups([]int{}); err != nil {
			return fmt.Errorf("drop supplementary groups: %w", err)
		}
		if err := syscall.Setgid(id); err != nil {
			return fmt.Errorf("change to group %d: %w", id, err)
		}
		if err := syscall.Setuid(id); err != nil {
			return fmt.Errorf("change to user %d: %w", id, err)
		}
	} else if has, err := hasCapabilities(); err != nil {
		return err
	} else if has {
		hdr := unix.CapUserHeader{Version: unix.LINUX_CAPABILITY_VERSION_3}
		var data [2]unix.CapUserData
		if _, _, e := syscall.AllThreadsSyscall(unix.SYS_CAPSET, uintptr(unsafe.Pointer(&hdr)), uintptr(unsafe.Pointer(&data[0])), 0); e != 0 {
			return fmt.Errorf("drop capabilities on all threads: %w (run as root, or without capabilities)", e)
		}
	}
	if _, _, e := syscall.AllThreadsSyscall6(unix.SYS_PRCTL, unix.PR_CAP_AMBIENT, unix.PR_CAP_AMBIENT_CLEAR_ALL, 0, 0, 0, 0); e != 0 && e != syscall.ENOTSUP {
		return fmt.Errorf("clear ambient capabilities: %w", e)
	}
	has, err := hasCapabilities()
	if err != nil {
		return err
	}
	if has {
		return fmt.Errorf("capabilities remain after dropping privileges (securebits keep them?)")
	}
	return nil
}

// hasCapabilities reports whether the calling thread has any capability
// in its permitted, effective or inheritable set.
func hasCapabilities() (bool, error) {
	hdr := unix.CapUserHeader{Version: unix.LINUX_CAPABILITY_VERSION_3}
	var data [2]unix.CapUserData
	if err := unix.Capget(&hdr, &data[0]); err != nil {
		return false, fmt.Errorf("read capabilities: %w", err)
	}
	for _, d := range data {
		if d.Effective|d.Permitted|d.Inheritable != 0 {
			return true, nil
		}
	}
	return false, nil
}

// policy is what the filter allows besides allowedSyscalls.
type policy struct {
	pid      int   // this process: the only target of kill and tgkill
	writable []int // descriptors write may use
	sendFD   int   // the socket sendto may use, with no address; -1: none
}

func argEqual(arg uint32, v uint64) seccomp.Condition {
	return seccomp.Condition{Argument: arg, Operation: seccomp.Equal, Value: v}
}

// seccompPolicy is the filter: allowedSyscalls; write, sendto, kill and
// tgkill on p's arguments only; clone only for threads; clone3 refused
// with ENOSYS (its flags are in memory a filter cannot read; glibc then
// falls back to clone); and everything else kills the process.
func seccompPolicy(p policy) seccomp.Policy {
	self := uint64(p.pid)
	conditional := []seccomp.NameWithConditions{
		{Name: "clone", Conditions: seccomp.ArgumentConditions{{Argument: 0, Operation: seccomp.BitsSet, Value: unix.CLONE_THREAD}}},
		// kill(pid, sig): the runtime raises signals on itself (crashes).
		{Name: "kill", Conditions: seccomp.ArgumentConditions{argEqual(0, self)}},
		// tgkill(tgid, tid, sig): preemption and signal forwarding between
		// this process's threads; the kernel refuses a tid of another
		// process with this tgid.
		{Name: "tgkill", Conditions: seccomp.ArgumentConditions{argEqual(0, self)}},
	}
	for _, fd := range p.writable {
		conditional = append(conditional, seccomp.NameWithConditions{Name: "write", Conditions: seccomp.ArgumentConditions{argEqual(0, uint64(fd))}})
	}
	if p.sendFD >= 0 {
		// sendto(fd, buf, len, flags, dest_addr, addrlen) with no address.
		conditional = append(conditional, seccomp.NameWithConditions{Name: "sendto",
			Conditions: seccomp.ArgumentConditions{argEqual(0, uint64(p.sendFD)), argEqual(4, 0), argEqual(5, 0)}})
	}
	return seccomp.Policy{
		DefaultAction: seccomp.ActionKillProcess,
		Syscalls: []seccomp.SyscallGroup{
			{Action: seccomp.ActionAllow, Names: allowedSyscalls()},
			{Action: seccomp.ActionAllow, NamesWithCondtions: conditional},
			{Action: seccomp.ActionErrno | seccomp.Action(unix.ENOSYS), Names: []string{"clone3"}},
		},
	}
}

// installSeccomp loads the filter on every thread and returns how many
// system calls it allows (some on some arguments only).
func installSeccomp(p policy) (int, error) {
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	f := seccomp.Filter{
		NoNewPrivs: true,
		Flag:       seccomp.FilterFlagTSync,
		Policy:     seccompPolicy(p),
	}
	if err := seccomp.LoadFilter(f); err != nil {
		return 0, fmt.Errorf("install seccomp filter: %w", err)
	}
	n := len(allowedSyscalls()) + 3 // clone, kill, tgkill
	if len(p.writable) > 0 {
		n++
	}
	if p.sendFD >= 0 {
		n++
	}
	return n, nil
}
