package e2e

import (
	"context"
	"io"
	"os/exec"
	"strings"
	"testing"
	"time"

	"github.com/qvm-project/qvm/e2e/xenvm"
	"github.com/qvm-project/qvm/internal/testio"
)

// TestConsole boots the bed and uses a PV guest's text console through
// qvm-console: its log, typing to the guest and reading its answer, the
// escape key, and the log after the VM is gone.
func TestConsole(t *testing.T) {
	if xenvm.Inside() {
		runChecks(t, []check{{"PV", consoleInside}})
		return
	}
	p := bedParts(t)
	xenvm.RunTest(context.Background(), t, xenvm.Config{Parts: p, Files: p.GuestFiles(), Timeout: 20 * time.Minute,
		XenArgs: []string{"bootscrub=0"}})
}

// consoleSession is a qvm-console attached to a VM, its input a pipe.
type consoleSession struct {
	t           *testing.T
	cmd         *exec.Cmd
	in          io.WriteCloser
	out, errOut testio.Buffer
}

// attachConsole starts qvm-console VM.
func attachConsole(t *testing.T, vm string) *consoleSession {
	t.Helper()
	c := &consoleSession{t: t, cmd: exec.Command("qvm-console", vm)}
	in, err := c.cmd.StdinPipe()
	if err != nil {
		t.Fatal(err)
	}
	c.in = in
	c.cmd.Stdout, c.cmd.Stderr = &c.out, &c.errOut
	if err := c.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if c.cmd.ProcessState == nil {
			c.cmd.Process.Kill()
			c.cmd.Wait()
		}
	})
	return c
}

// waitOutput waits until the console printed want, calling poke (if not
// nil) before each look.
func (c *consoleSession) waitOutput(want string, poke func()) {
	c.t.Helper()
	err := waitFor(2*time.Minute, func() bool {
		if poke != nil && !strings.Contains(c.out.String(), want) {
			poke()
			time.Sleep(time.Second)
		}
		return strings.Contains(c.out.String(), want)
	})
	if err != nil {
		c.t.Errorf("qvm-console never printed %q: %v\nstdout %q\nstderr %q", want, err, xenvm.Tail([]byte(c.out.String()), 20), c.errOut.String())
	}
}

// leave types Ctrl-] and checks that qvm-console exits 0.
func (c *consoleSession) leave() {
	c.t.Helper()
	c.in.Write([]byte{0x1d})
	done := make(chan error, 1)
	go func() { done <- c.cmd.Wait() }()
	select {
	case err := <-done:
		if err != nil {
			c.t.Errorf("qvm-console after Ctrl-]: %v\n%s", err, c.errOut.String())
		}
	case <-time.After(time.Minute):
		c.cmd.Process.Kill()
		<-done
		c.t.Errorf("qvm-console did not leave on Ctrl-]")
	}
}

// consoleLogHas reports whether qvm-console --log VM shows s.
func consoleLogHas(vm, s string) bool {
	out, err := exec.Command("qvm-console", "--log", vm).Output()
	return err == nil && strings.Contains(string(out), s)
}

func consoleInside(t *testing.T) {
	q := newQvm(t)
	installKernel(t)
	q.ok("qvm-create", "--class", "TemplateVM", "debian-12", "-l", "black")
	q.ok("qvm-prefs", "debian-12", "kernelopts", "quiet qvm.echo=1 qvm.marker=console-up qvm.after=wait")
	q.ok("qvm-create", "--template", "debian-12", "--label", "blue", "--prop", "netvm=", "--prop", "virt_mode=pv", "work")
	q.expectRun(1, "qvm-console: error: work is not running: qvm-start work first (qvm-console --log work shows what its console printed)\n", "qvm-console", "work")
	q.ok("qvm-start", "work")

	// The log has what the guest printed since it started.
	logHas := func(s string) bool { return consoleLogHas("work", s) }
	if err := waitFor(2*time.Minute, func() bool { return logHas("guestinit: marker console-up") }); err != nil {
		out, _ := q.run("qvm-console", "--log", "work")
		t.Fatalf("the guest's marker is not in its console log: %v\n%s", err, xenvm.Tail([]byte(out), 40))
	}

	// Attached: what is typed reaches the guest, its answer comes back,
	// and Ctrl-] leaves with exit 0.
	c := attachConsole(t, "work")
	const answer = `guestinit: console got "hello console"`
	// Until the attach is in place, what is typed may come before it:
	// type the line again until the answer is seen.
	c.waitOutput(answer, func() { c.in.Write([]byte("hello console\r")) })
	c.leave()
	if !logHas(answer) {
		t.Errorf("the answer is not in the console log")
	}

	// The VM gone, its log stays.
	q.ok("qvm-kill", "work")
	if out, err := q.run("qvm-console", "--log", "work"); err == nil {
		t.Logf("work's console log ends:\n%s", xenvm.Tail([]byte(out), 15))
	}
	if !logHas("guestinit: marker console-up") {
		t.Errorf("the console log went with the VM")
	}
	q.expectRun(1, "qvm-console: error: work is not running: qvm-start work first (qvm-console --log work shows what its console printed)\n", "qvm-console", "work")
}
