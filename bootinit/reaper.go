package bootinit

import (
	"context"
	"fmt"
	"os"
	"os/signal"
	"sync"
	"time"

	"golang.org/x/sys/unix"
)

// Reaper starts child processes of pid 1 and reaps every process that exits,
// its own children and orphans re-parented to pid 1 alike (daemons such as
// the background process `xl create` leaves). Only one Reaper may run in a
// process, and nothing else in it may wait for children: use Reaper.Start
// instead of os/exec.
type Reaper struct {
	mu      sync.Mutex
	waiters map[int]chan unix.WaitStatus
	stop    func()
	done    chan struct{}
}

// NewReaper starts reaping. Call Close to stop.
func NewReaper() *Reaper {
	r := &Reaper{waiters: map[int]chan unix.WaitStatus{}, done: make(chan struct{})}
	sig := make(chan os.Signal, 16)
	signal.Notify(sig, unix.SIGCHLD)
	ctx, cancel := context.WithCancel(context.Background())
	r.stop = func() {
		cancel()
		signal.Stop(sig)
	}
	go func() {
		defer close(r.done)
		tick := time.NewTicker(time.Second) // in case a SIGCHLD was coalesced
		defer tick.Stop()
		for {
			r.reapAll()
			select {
			case <-ctx.Done():
				return
			case <-sig:
			case <-tick.C:
			}
		}
	}()
	return r
}

// Close stops reaping.
func (r *Reaper) Close() {
	r.stop()
	<-r.done
}

func (r *Reaper) reapAll() {
	for {
		var ws unix.WaitStatus
		pid, err := unix.Wait4(-1, &ws, unix.WNOHANG, nil)
		if err == unix.EINTR {
			continue
		}
		if err != nil || pid <= 0 {
			return
		}
		// Start holds mu from before the fork until the pid is
		// registered, so a child that exits at once is still found.
		r.mu.Lock()
		ch, ok := r.waiters[pid]
		delete(r.waiters, pid)
		r.mu.Unlock()
		if ok {
			ch <- ws
		}
	}
}

// Proc is a child process started by a Reaper.
type Proc struct {
	Pid    int
	Name   string
	status chan unix.WaitStatus
	ws     unix.WaitStatus
	exited chan struct{}
}

// Cmd describes a process to start. Stdio files default to /dev/null.
type Cmd struct {
	Path   string
	Args   []string // argv, including argv[0]; defaults to {Path}
	Env    []string // defaults to os.Environ()
	Dir    string
	Stdin  *os.File
	Stdout *os.File
	Stderr *os.File
	// Setsid puts the child in its own session (and so its own process
	// group), so KillGroup can stop it with everything it started.
	Setsid bool
	// Ctty makes Stdin the child's controlling terminal (needs Setsid):
	// for an interactive shell on the console.
	Ctty bool
}

// Start starts c and returns its process.
func (r *Reaper) Start(c Cmd) (*Proc, error) {
	args := c.Args
	if len(args) == 0 {
		args = []string{c.Path}
	}
	env := c.Env
	if env == nil {
		env = os.Environ()
	}
	devnull, err := os.OpenFile(os.DevNull, os.O_RDWR, 0)
	if err != nil {
		return nil, fmt.Errorf("start %s: %w", c.Path, err)
	}
	defer devnull.Close()
	files := []*os.File{c.Stdin, c.Stdout, c.Stderr}
	for i := range files {
		if files[i] == nil {
			files[i] = devnull
		}
	}
	attr := &os.ProcAttr{Dir: c.Dir, Env: env, Files: files, Sys: &unix.SysProcAttr{Setsid: c.Setsid, Setctty: c.Ctty, Ctty: 0}}
	r.mu.Lock()
	defer r.mu.Unlock()
	p, err := os.StartProcess(c.Path, args, attr)
	if err != nil {
		return nil, fmt.Errorf("start %s: %w", c.Path, err)
	}
	pr := &Proc{Pid: p.Pid, Name: c.Path, status: make(chan unix.WaitStatus, 1), exited: make(chan struct{})}
	r.waiters[p.Pid] = pr.status
	_ = p.Release() // the Reaper waits for it, not os.Process
	go func() {
		pr.ws = <-pr.status
		close(pr.exited)
	}()
	return pr, nil
}

// Exited is closed when the process has exited.
func (p *Proc) Exited() <-chan struct{} { return p.exited }

// Wait waits for the process to exit or ctx to end.
func (p *Proc) Wait(ctx context.Context) (unix.WaitStatus, error) {
	select {
	case <-p.exited:
		return p.ws, nil
	case <-ctx.Done():
		return 0, fmt.Errorf("wait for %s (pid %d): %w", p.Name, p.Pid, ctx.Err())
	}
}

// Signal sends sig to the process (and, if it was started with Setsid, to
// its whole process group when group is true).
func (p *Proc) Signal(sig unix.Signal, group bool) error {
	select {
	case <-p.exited:
		return nil
	default:
	}
	pid := p.Pid
	if group {
		pid = -pid
	}
	if err := unix.Kill(pid, sig); err != nil && err != unix.ESRCH {
		return fmt.Errorf("signal %s (pid %d): %w", p.Name, p.Pid, err)
	}
	return nil
}

// ExitCode turns a wait status into a shell-style exit code: the exit status,
// or 128+N for death by signal N.
func ExitCode(ws unix.WaitStatus) int {
	if ws.Signaled() {
		return 128 + int(ws.Signal())
	}
	return ws.ExitStatus()
}

// Run starts c and waits for it; it fails if the process does not exit 0.
func (r *Reaper) Run(ctx context.Context, c Cmd) error {
	p, err := r.Start(c)
	if err != nil {
		return err
	}
	ws, err := p.Wait(ctx)
	if err != nil {
		_ = p.Signal(unix.SIGKILL, false)
		return err
	}
	if code := ExitCode(ws); code != 0 {
		return fmt.Errorf("%s exited with status %d", c.Path, code)
	}
	return nil
}
