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

// nobody is the user and group the server runs as once sandboxed (the
// traditional nobody/nogroup numbers; no passwd file is needed).
const nobody = 65534

// allowedSyscalls are the system calls a sandboxed server may make: the
// serve loop's (recvfrom, sendto on the bound socket, write for logs,
// close at shutdown) and those the Go runtime makes while it runs (thread
// creation, scheduling, memory, signals for preemption, the network
// poller). They were found with strace -f running the real-client tests,
// plus the runtime's own list (runtime/sys_linux_amd64.s). Nothing here
// can open a file, create a socket, run a program or change privileges.
func allowedSyscalls() []string {
	return []string{
		// serve loop
		"recvfrom", "sendto", "write", "read", "close",
		// network poller
		"epoll_pwait", "epoll_wait", "epoll_ctl",
		// scheduler, locks, timers
		"futex", "nanosleep", "clock_nanosleep", "sched_yield", "clock_gettime", "gettimeofday", "restart_syscall",
		// memory
		"mmap", "munmap", "madvise", "mprotect",
		// signals (preemption uses tgkill with SIGURG)
		"rt_sigaction", "rt_sigprocmask", "rt_sigreturn", "sigaltstack", "getpid", "gettid", "tgkill",
		// threads (clone is further limited to CLONE_THREAD below); glibc's
		// thread start in cgo programs
		"set_robust_list", "rseq",
		// exit
		"exit", "exit_group",
	}
}

// Sandbox confines the whole process, irreversibly:
//
//  1. It fixes GOMAXPROCS, so the runtime stops re-reading cgroup files,
//     and loads the local time zone, which log timestamps need.
//  2. A root process becomes user and group nobody (65534) with no
//     supplementary groups; that clears every capability on every thread.
//     A non-root process drops whatever capabilities it has. Either way it
//     checks that none is left.
//  3. It sets no_new_privs and installs a seccomp filter on all threads
//     (TSYNC) that allows only allowedSyscalls. Any other system call
//     kills the whole process with SIGSYS (SECCOMP_RET_KILL_PROCESS); the
//     process cannot log that itself, but the kernel's audit log records
//     it (type=SECCOMP, sig=31, with the call's number) and the parent
//     sees the process die of SIGSYS.
//
// Serve calls it once its sockets are bound; it is exported so that a
// program embedding the server can call it at the same point itself.
func Sandbox(log *slog.Logger) error {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	runtime.GOMAXPROCS(runtime.GOMAXPROCS(0))
	// Load what the standard library reads from files lazily, while files
	// can still be opened: the local time zone (log timestamps).
	_, _ = time.Now().Local().Zone()
	if err := dropPrivileges(); err != nil {
		return fmt.Errorf("sandbox: %w", err)
	}
	uid, gid := os.Getuid(), os.Getgid() // getuid(2) is not allowed later
	n, err := installSeccomp()
	if err != nil {
		return fmt.Errorf("sandbox: %w", err)
	}
	log.Info(fmt.Sprintf("seccomp filter installed: %d syscalls allowed; any other syscall kills this process (SIGSYS, see the kernel audit log)", n),
		"uid", uid, "gid", gid)
	return nil
}

// dropPrivileges leaves the process with no capability on any thread.
func dropPrivileges() error {
	if os.Geteuid() == 0 || os.Getuid() == 0 {
		// Go applies these to every thread of the process.
		if err := syscall.Setgroups([]int{}); err != nil {
			return fmt.Errorf("drop supplementary groups: %w", err)
		}
		if err := syscall.Setgid(nobody); err != nil {
			return fmt.Errorf("change to group %d: %w", nobody, err)
		}
		if err := syscall.Setuid(nobody); err != nil {
			return fmt.Errorf("change to user %d: %w", nobody, err)
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

// seccompPolicy is the filter: allowedSyscalls, clone only for threads,
// clone3 refused with ENOSYS (its flags are in memory a filter cannot read;
// glibc then falls back to clone), and everything else kills the process.
func seccompPolicy() seccomp.Policy {
	return seccomp.Policy{
		DefaultAction: seccomp.ActionKillProcess,
		Syscalls: []seccomp.SyscallGroup{
			{Action: seccomp.ActionAllow, Names: allowedSyscalls()},
			{
				Action: seccomp.ActionAllow,
				NamesWithCondtions: []seccomp.NameWithConditions{{
					Name:       "clone",
					Conditions: seccomp.ArgumentConditions{{Argument: 0, Operation: seccomp.BitsSet, Value: unix.CLONE_THREAD}},
				}},
			},
			{Action: seccomp.ActionErrno | seccomp.Action(unix.ENOSYS), Names: []string{"clone3"}},
		},
	}
}

// installSeccomp loads the filter on every thread and returns how many
// system calls it allows.
func installSeccomp() (int, error) {
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	f := seccomp.Filter{
		NoNewPrivs: true,
		Flag:       seccomp.FilterFlagTSync,
		Policy:     seccompPolicy(),
	}
	if err := seccomp.LoadFilter(f); err != nil {
		return 0, fmt.Errorf("install seccomp filter: %w", err)
	}
	return len(allowedSyscalls()) + 1, nil
}
