package bootinit

import (
	"context"
	"os"
	"strconv"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

func TestReaperExitCodes(t *testing.T) {
	r := NewReaper()
	defer r.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	for _, tt := range []struct {
		script string
		want   int
	}{
		{"exit 0", 0},
		{"exit 7", 7},
		{"kill -TERM $$", 128 + int(unix.SIGTERM)},
	} {
		p, err := r.Start(Cmd{Path: "/bin/sh", Args: []string{"sh", "-c", tt.script}})
		if err != nil {
			t.Fatal(err)
		}
		ws, err := p.Wait(ctx)
		if err != nil {
			t.Fatal(err)
		}
		if got := ExitCode(ws); got != tt.want {
			t.Errorf("%q: exit code %d, want %d", tt.script, got, tt.want)
		}
	}
	if err := r.Run(ctx, Cmd{Path: "/bin/false"}); err == nil || !strings.Contains(err.Error(), "status 1") {
		t.Errorf("Run(/bin/false) = %v, want an error naming status 1", err)
	}
	if _, err := r.Start(Cmd{Path: "/nonexistent/binary"}); err == nil {
		t.Error("Start of a missing binary succeeded")
	}
}

// TestReaperReapsOrphans makes this process a child subreaper, as pid 1 is:
// a grandchild whose parent exits is re-parented here and must not stay a
// zombie.
func TestReaperReapsOrphans(t *testing.T) {
	if err := unix.Prctl(unix.PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0); err != nil {
		t.Skipf("cannot become a child subreaper: %v", err)
	}
	defer unix.Prctl(unix.PR_SET_CHILD_SUBREAPER, 0, 0, 0, 0)
	r := NewReaper()
	defer r.Close()
	pr, pw, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	defer pr.Close()
	// The shell starts a short-lived background child, prints its pid and
	// exits at once: the child becomes our orphan.
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	err = r.Run(ctx, Cmd{Path: "/bin/sh", Args: []string{"sh", "-c", "sleep 0.3 & echo $!"}, Stdout: pw})
	pw.Close()
	if err != nil {
		t.Fatal(err)
	}
	b := make([]byte, 64)
	n, _ := pr.Read(b)
	orphan, err := strconv.Atoi(strings.TrimSpace(string(b[:n])))
	if err != nil {
		t.Fatalf("orphan pid %q: %v", b[:n], err)
	}
	deadline := time.Now().Add(20 * time.Second)
	for {
		// Once reaped, the pid is gone entirely (not a zombie).
		if err := unix.Kill(orphan, 0); err == unix.ESRCH {
			return
		}
		if time.Now().After(deadline) {
			st, _ := os.ReadFile("/proc/" + strconv.Itoa(orphan) + "/stat")
			t.Fatalf("orphan %d was not reaped: %s", orphan, st)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

func TestReaperWaitContext(t *testing.T) {
	r := NewReaper()
	defer r.Close()
	p, err := r.Start(Cmd{Path: "/bin/sleep", Args: []string{"sleep", "30"}, Setsid: true})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 100*time.Millisecond)
	defer cancel()
	if _, err := p.Wait(ctx); err == nil {
		t.Fatal("Wait returned before the process exited")
	}
	if err := p.Signal(unix.SIGKILL, true); err != nil {
		t.Fatal(err)
	}
	ws, err := p.Wait(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	if !ws.Signaled() || ws.Signal() != unix.SIGKILL {
		t.Fatalf("status %v, want killed by SIGKILL", ws)
	}
}
