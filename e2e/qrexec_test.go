package e2e

import (
	"bytes"
	"context"
	"crypto/rand"
	"crypto/sha256"
	"errors"
	"fmt"
	"io"
	mrand "math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/qvm-project/qvm/e2e/xenvm"
	"github.com/qvm-project/qvm/xenstore"
)

// TestQrexec boots the bed and runs commands in a PV guest that runs
// qvm's qrexec agent (cmd/qrexec-agent), with qvm-run: Qubes' options,
// exit codes, input and output both ways (every byte),
// users, and nothing left behind.
func TestQrexec(t *testing.T) {
	if xenvm.Inside() {
		runChecks(t, []check{{"Run", qrexecInside}})
		return
	}
	p := bedParts(t)
	xenvm.RunTest(context.Background(), t, xenvm.Config{Parts: p, Files: p.GuestFiles(), Timeout: 30 * time.Minute,
		XenArgs: []string{"bootscrub=0"}})
}

// runWithInput runs argv with stdin and returns its standard output and
// error apart, and its exit code.
func (q *qvm) runWithInput(stdin []byte, argv ...string) (stdout, stderr string, code int) {
	q.t.Helper()
	start := time.Now()
	cmd := exec.Command(argv[0], argv[1:]...)
	cmd.Stdin = bytes.NewReader(stdin)
	var o, e bytes.Buffer
	cmd.Stdout, cmd.Stderr = &o, &e
	err := cmd.Run()
	var ee *exec.ExitError
	switch {
	case errors.As(err, &ee):
		code = ee.ExitCode()
	case err != nil:
		q.t.Fatalf("%s: %v", strings.Join(argv, " "), err)
	}
	q.t.Logf("$ %s  (%.2f s, exit %d, %d bytes out)\n%.2000s", strings.Join(argv, " "), time.Since(start).Seconds(), code, o.Len(), e.String())
	return o.String(), e.String(), code
}

// logXenstored logs whether dom0's xenstored still runs and the end of
// its log: what a failure that lost xenstore connections needs.
func logXenstored(t *testing.T) {
	pid, _ := os.ReadFile("/run/xenstored.pid")
	_, err := os.Stat("/proc/" + strings.TrimSpace(string(pid)))
	b, _ := os.ReadFile("/var/log/xen/xenstored.log")
	t.Logf("xenstored (pid %s) alive: %v; its log ends:\n%s", strings.TrimSpace(string(pid)), err == nil, xenvm.Tail(b, 30))
}

// passIOBothWays sends n random bytes through `qvm-run -p work cat` and
// compares what comes back with what went, byte for byte, as a stream:
// both are the same ChaCha8 sequence, from a random seed.
func passIOBothWays(t *testing.T, n int64) {
	t.Helper()
	var seed [32]byte
	rand.Read(seed[:])
	start := time.Now()
	cmd := exec.Command("qvm-run", "-p", "--no-filter-escape-chars", "work", "cat")
	cmd.Stdin = io.LimitReader(mrand.NewChaCha8(seed), n)
	cmp := &streamCompare{want: mrand.NewChaCha8(seed), diff: -1}
	var errOut bytes.Buffer
	cmd.Stdout, cmd.Stderr = cmp, &errOut
	err := cmd.Run()
	t.Logf("qvm-run -p work cat: %d bytes each way in %.1f s", n, time.Since(start).Seconds())
	if err != nil || cmp.n != n || cmp.diff >= 0 {
		t.Errorf("cat of %d bytes: %v, %d bytes back, first difference at %d (-1: none)\n%s", n, err, cmp.n, cmp.diff, errOut.String())
	}
}

// streamCompare is a Writer that checks what is written against want:
// n counts the bytes, diff is the offset of the first that differs
// (start it at -1: none).
type streamCompare struct {
	want io.Reader
	buf  []byte
	n    int64
	diff int64
}

func (c *streamCompare) Write(p []byte) (int, error) {
	if cap(c.buf) < len(p) {
		c.buf = make([]byte, len(p))
	}
	w := c.buf[:len(p)]
	io.ReadFull(c.want, w)
	if c.diff < 0 {
		for i := range p {
			if p[i] != w[i] {
				c.diff = c.n + int64(i)
				break
			}
		}
	}
	c.n += int64(len(p))
	return len(p), nil
}

func qrexecInside(t *testing.T) {
	q := newQvm(t)
	installKernel(t)
	q.ok("qvm-create", "--class", "TemplateVM", "debian-12", "-l", "black")
	q.ok("qvm-prefs", "debian-12", "kernelopts", "quiet qvm.qrexec=1 qvm.after=wait")
	q.ok("qvm-prefs", "debian-12", "vcpus", "1")
	q.ok("qvm-create", "--template", "debian-12", "--label", "blue", "--prop", "netvm=", "--prop", "virt_mode=pv", "work")
	// The wait for the agent bounds a hang, not the boot's speed.
	q.ok("qvm-prefs", "work", "qrexec_timeout", "300")

	// A halted VM: -n refuses, without starting it.
	q.expectRun(125, "qvm-run: error: Qube work not running (without --no-autostart, qvm-run starts it)\n", "qvm-run", "-n", "-p", "work", "true")
	q.expectRun(1, "qvm-check: None of qubes: running\n", "qvm-check", "--running", "work")
	t.Cleanup(func() {
		if t.Failed() {
			b, _ := os.ReadFile(consoleLog("work"))
			t.Logf("work's console:\n%s", xenvm.Tail(b, 60))
			b, _ = os.ReadFile(filepath.Join(stateDir(), "log", "work.log"))
			t.Logf("work's monitor log:\n%s", xenvm.Tail(b, 40))
			out, _ := q.run("xenstore-ls", "-p", "/local/domain/0/data")
			t.Logf("dom0's data keys:\n%s", out)
			logXenstored(t)
		}
	})
	// Without -n qvm-run starts it (Qubes' default) and waits for its agent.
	if out, _, code := q.runWithInput(nil, "qvm-run", "--pass-io", "work", "id -un"); code != 0 || out != "user\n" {
		id := strings.TrimSpace(q.ok("xl", "domid", "work"))
		keys, _ := q.run("xenstore-ls", "-p", "/local/domain/"+id+"/data")
		t.Fatalf("first qvm-run: exit %d, output %q; the guest's data keys:\n%s", code, out, keys)
	}
	q.expectRun(0, "qvm-check: work: running\n", "qvm-check", "--running", "work")
	q.expectRun(0, "root 0\n", "qvm-run", "-u", "root", "-p", "work", "echo $(id -un) $(id -u)")
	q.expectRun(0, "/home/user\n", "qvm-run", "-p", "work", "pwd")

	// The command's exit code is qvm-run's, with or without --pass-io.
	q.expectRun(3, "Running 'exit 3' on work\n", "qvm-run", "work", "exit 3")
	q.expectRun(0, "", "qvm-run", "-q", "work", "touch /tmp/x")
	q.expectRun(0, "yes\n", "qvm-run", "-p", "work", "test -f /tmp/x && echo yes")
	q.expectRun(0, "", "qvm-run", "-q", "work", "echo not shown; echo nor this >&2")
	out, errOut, code := q.runWithInput(nil, "qvm-run", "-p", "work", "echo out; echo err >&2; exit 4")
	if out != "out\n" || errOut != "err\n" || code != 4 {
		t.Errorf("streams: out %q err %q code %d", out, errOut, code)
	}

	// Input: the seeds' `echo data | qvm-run --pass-io work 'cat > /tmp/in'`.
	if _, _, code := q.runWithInput([]byte("data\n"), "qvm-run", "--pass-io", "work", "cat > /tmp/in"); code != 0 {
		t.Errorf("cat > /tmp/in: exit %d", code)
	}
	q.expectRun(0, "data\n", "qvm-run", "-p", "work", "cat /tmp/in")
	// Random data each way at once, every byte compared as it comes back
	// (neither side keeps it): 100 MiB, the figure. (The parallel
	// runs below once lost a channel after this: the guest's xenbus device
	// overwrote pipelined requests; see xenstore Config.OneMessagePerWrite.)
	passIOBothWays(t, 100<<20+3)

	// Several at once (a test suite's parallel commands): each its own channel.
	var wg sync.WaitGroup
	outs := make([]string, 4)
	for i := range outs {
		wg.Go(func() {
			outs[i], _, _ = q.runWithInput(nil, "qvm-run", "-p", "work", fmt.Sprintf("sleep 1; echo %d", i))
		})
	}
	// One still waiting after a minute: Xen's event channels now.
	slow := time.AfterFunc(time.Minute, func() {
		q.run("xl", "debug-keys", "e")
		out, _ := exec.Command("xl", "dmesg").Output()
		t.Logf("a parallel run is slow; Xen's event channels:\n%s", xenvm.Tail(out, 150))
	})
	wg.Wait()
	slow.Stop()
	for i, out := range outs {
		if out != fmt.Sprintf("%d\n", i) {
			t.Errorf("parallel run %d: %q", i, out)
		}
	}

	// The seeds' image copy, as written: a VM's file through qvm-run's
	// output into a dom0 file, every byte, then made the root of an HVM.
	q.ok("qvm-run", "-u", "root", "-p", "work", "mkdir -p /media/user/externalhd && chown user /media/user/externalhd")
	q.ok("qvm-run", "-p", "work", `head -c 8388608 /dev/urandom > "/media/user/externalhd/win10.raw"`)
	guestSum := strings.Fields(q.ok("qvm-run", "-p", "work", `sha256sum "/media/user/externalhd/win10.raw"`))[0]
	img := filepath.Join(t.TempDir(), "win10-root.img")
	// (the shell's "> FILE": dom0 here has no shell)
	copyOut, err := os.Create(img)
	if err != nil {
		t.Fatal(err)
	}
	cp := exec.Command("qvm-run", "--pass-io", "work", `cat "/media/user/externalhd/win10.raw"`)
	var cpErr bytes.Buffer
	cp.Stdout, cp.Stderr = copyOut, &cpErr
	if err := cp.Run(); err != nil {
		t.Fatalf("qvm-run ... > %s: %v\n%s", img, err, cpErr.String())
	}
	copyOut.Close()
	b, err := os.ReadFile(img)
	if err != nil {
		t.Fatal(err)
	}
	if sum := fmt.Sprintf("%x", sha256.Sum256(b)); sum != guestSum || len(b) != 8<<20 {
		t.Fatalf("copied image: %d bytes, sha256 %s; the guest's file has %s", len(b), sum, guestSum)
	}
	q.ok("qvm-create", "--hvm", "win10", "--label", "red", "--mem=400", "--root-move-from", img)
	if _, err := os.Stat(img); !os.IsNotExist(err) {
		t.Errorf("--root-move-from left the source: %v", err)
	}

	// COMMAND with ARGS, or --no-shell: the arguments reach the program
	// as they are.
	q.expectRun(0, "a b $HOME ;x\n", "qvm-run", "-p", "work", "--", "echo", "a b", "$HOME", ";x")
	q.expectRun(127, "qrexec-agent: no-such-program: file does not exist\n", "qvm-run", "-p", "--no-shell", "work", "no-such-program")
	// A service the VM does not have: 127, as Qubes.
	if _, errOut, code := q.runWithInput(nil, "qvm-run", "-p", "--service", "work", "qubes.NoSuchService"); code != 127 || !strings.Contains(errOut, "qubes.NoSuchService") {
		t.Errorf("missing service: exit %d, stderr %q", code, errOut)
	}
	// A user the VM does not have: refused.
	if _, errOut, code := q.runWithInput(nil, "qvm-run", "-p", "-u", "nobody2", "work", "true"); code != 126 || !strings.Contains(errOut, "nobody2") {
		t.Errorf("missing user: exit %d, stderr %q", code, errOut)
	}
	// Control characters the guest prints are replaced on request.
	if out, _, _ := q.runWithInput(nil, "qvm-run", "-p", "--filter-escape-chars", "work", `printf 'a\033[2Jb\n'`); strings.ContainsRune(out, 0x1b) || !strings.HasPrefix(out, "a") {
		t.Errorf("filtered output %q still has ESC", out)
	}
	if out, _, _ := q.runWithInput(nil, "qvm-run", "-p", "work", `printf 'a\033[2Jb'`); out != "a\x1b[2Jb" {
		t.Errorf("unfiltered output %q (stdout is no terminal: nothing is replaced)", out)
	}
	// Bad requests: clear errors.
	q.expectRun(2, "qvm-run: error: give the command to run (see qvm-run --help)\n", "qvm-run", "work")
	if out, err := q.run("qvm-run", "--dispvm", "work", "true"); err == nil || !strings.Contains(out, "disposable") {
		t.Errorf("--dispvm: %v %q", err, out)
	}

	// A qvm-run killed with SIGKILL cannot remove its channel's keys; the
	// next qvm-run to the VM does.
	id := strings.TrimSpace(q.ok("xl", "domid", "work"))
	killed := exec.Command("qvm-run", "-p", "work", "sleep 30")
	var killedOut bytes.Buffer
	killed.Stdout, killed.Stderr = &killedOut, &killedOut
	if err := killed.Start(); err != nil {
		t.Fatal(err)
	}
	killedPort := strconv.Itoa(513 + killed.Process.Pid)
	xs, err := xenstore.Dial(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	defer xs.Close()
	channels := func() ([]string, error) {
		return xs.Directory(context.Background(), "/local/domain/0/data/vchan/"+id)
	}
	if err := waitFor(time.Minute, func() bool {
		ports, _ := channels()
		return slices.Contains(ports, killedPort)
	}); err != nil {
		ports, lerr := channels()
		t.Errorf("qvm-run's channel (port %s) never appeared: %v; dom0's channels to work: %v, %v; qvm-run's output: %q", killedPort, err, ports, lerr, killedOut.String())
	}
	killed.Process.Kill()
	killed.Wait()
	q.expectRun(0, "", "qvm-run", "-q", "work", "true")

	// Nothing of the runs is left in dom0's xenstore: each data channel's
	// keys went with it.
	if ports, err := channels(); len(ports) != 0 || (err != nil && !errors.Is(err, syscall.ENOENT)) {
		t.Errorf("data channels left in xenstore: %v, %v", ports, err)
	}

	// The VM killed in the middle of a transfer: qvm-run ends, says why,
	// exit 125; nothing of the channel is left.
	mid := exec.Command("qvm-run", "-p", "--no-filter-escape-chars", "work", "cat /dev/zero")
	var midErr bytes.Buffer
	mid.Stderr = &midErr
	midOut, err := mid.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := mid.Start(); err != nil {
		t.Fatal(err)
	}
	if _, err := io.ReadFull(midOut, make([]byte, 1<<20)); err != nil {
		t.Fatalf("qvm-run -p work 'cat /dev/zero': %v\n%s", err, midErr.String())
	}
	q.ok("qvm-kill", "work")
	midDone := make(chan error, 1)
	go func() {
		_, _ = io.Copy(io.Discard, midOut)
		midDone <- mid.Wait()
	}()
	select {
	case err := <-midDone:
		var ee *exec.ExitError
		if !errors.As(err, &ee) || ee.ExitCode() != 125 || !strings.Contains(midErr.String(), "went away") {
			t.Errorf("qvm-run during qvm-kill: %v, stderr %q", err, midErr.String())
		}
	case <-time.After(5 * time.Minute): // bounds a hang
		mid.Process.Kill()
		t.Fatalf("qvm-run still runs 5 minutes after its VM was killed")
	}
	// The monitor cleans up once it sees the domain gone.
	if err := waitFor(time.Minute, func() bool {
		_, err := channels()
		left, _ := filepath.Glob(filepath.Join(stateDir(), "run", "*.qrexec"))
		return errors.Is(err, syscall.ENOENT) && len(left) == 0
	}); err != nil {
		out, _ := q.run("xenstore-ls", "-p", "/local/domain/0/data")
		left, _ := filepath.Glob(filepath.Join(stateDir(), "run", "*.qrexec"))
		t.Errorf("a minute after the VM's death: dom0's keys %q, qrexec sockets %q", out, left)
	}

	// A hostile VM: it offers the control channel again and again and
	// answers with a header claiming a 4 GiB message, then garbage. dom0
	// reads no more than the bound, logs it, tries again, and qvm-run
	// says the VM has no agent; the VM and its monitor stay up.
	q.ok("qvm-create", "--template", "debian-12", "--label", "red", "--prop", "netvm=", "--prop", "virt_mode=pv", "hostile")
	q.ok("qvm-prefs", "hostile", "kernelopts", "quiet qvm.qrexec=hostile qvm.after=wait")
	q.ok("qvm-prefs", "hostile", "qrexec_timeout", "20")
	q.ok("qvm-start", "hostile")
	consoleValue(t, "hostile", "hostile agent: garbage sent on channel 3")
	if _, errOut, code := q.runWithInput(nil, "qvm-run", "-p", "hostile", "true"); code != 125 || !strings.Contains(errOut, "did not connect") {
		t.Errorf("qvm-run on a hostile VM: exit %d, stderr %q", code, errOut)
	}
	q.expectRun(0, "qvm-check: hostile: running\n", "qvm-check", "--running", "hostile")
	monLog, _ := os.ReadFile(filepath.Join(stateDir(), "log", "hostile.log"))
	if !strings.Contains(string(monLog), "too long") {
		t.Errorf("the monitor did not log the oversized message:\n%s", xenvm.Tail(monLog, 20))
	}
	q.ok("qvm-kill", "hostile")
}
