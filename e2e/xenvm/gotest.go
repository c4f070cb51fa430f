package xenvm

import (
	"bytes"
	"context"
	"io"
	"os"
	"regexp"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/qvm-project/qvm/e2e/hostjob"
)

// InsideEnv is set to "1" in the environment of a test binary that RunTest
// runs inside dom0.
const InsideEnv = "QVM_XENVM_INSIDE"

// Inside reports whether this process runs inside the test bed's dom0 (as
// started by RunTest).
func Inside() bool { return os.Getenv(InsideEnv) == "1" }

// testBinary is the name of the test binary in the shared directory.
const testBinary = "xenvm.test"

// RunTest boots the test bed and runs the calling test, t.Name(), of this
// same test binary inside dom0, where Inside() is true; so one test function
// holds both halves:
//
//	func TestX(t *testing.T) {
//		if xenvm.Inside() {
//			// runs in dom0: use xl, qvm, /mnt/host/...
//			return
//		}
//		xenvm.RunTest(ctx, t, xenvm.Config{...})
//	}
//
// The inside run's output and dom0init's progress lines are logged through
// t.Log as they come. t fails if the inside test failed or dom0 never
// reported; the Result is returned for timings and logs. cfg.Job is set by
// RunTest; cfg.Files gets the test binary. Under -short the test is
// skipped, or fails with QVM_TEST_STRICT=1 (see SkipShort).
//
// One RunTest boots at a time on a machine: go test runs the test binaries
// of several packages at once, and two emulated machines on the same cores
// slow each other's guests past their timeouts, so RunTest first waits for
// a file lock in the temporary directory (the wait does not count against
// cfg.Timeout).
func RunTest(ctx context.Context, t testing.TB, cfg Config) *Result {
	t.Helper()
	SkipShort(t)
	waitStart := time.Now()
	unlock, err := lockBed(ctx, os.TempDir(), func(path string) {
		t.Logf("xenvm: another test bed is running (%s is locked); waiting for it to end", path)
	})
	if err != nil {
		t.Fatal(err)
	}
	defer unlock()
	if d := time.Since(waitStart); d > 5*time.Second {
		t.Logf("xenvm: waited %.0f s for the other test bed", d.Seconds())
	}
	exe, err := os.Executable()
	if err != nil {
		t.Fatalf("xenvm: find the test binary: %v", err)
	}
	files := map[string]string{testBinary: exe}
	for k, v := range cfg.Files {
		files[k] = v
	}
	cfg.Files = files
	env := []string{InsideEnv + "=1"}
	for _, k := range []string{"QVM_TEST_STRICT", "QVM_DEBUG"} {
		if v, ok := os.LookupEnv(k); ok {
			env = append(env, k+"="+v)
		}
	}
	// The inside test times out (and prints its goroutines) before the
	// machine is killed, even after a retried boot.
	timeout := cfg.Timeout
	if timeout == 0 {
		timeout = defaultTimeout
	}
	bootTimeout := cfg.BootTimeout
	if bootTimeout == 0 {
		bootTimeout = defaultBootTimeout
	}
	inside := max(timeout-bootTimeout-2*time.Minute, time.Minute)
	cfg.Job = GoTestJob(ShareMount+"/"+testBinary, t.Name(), env, inside)
	lw := &lineWriter{emit: func(s string) { t.Log(s) }}
	cfg.Output = teeWriter(cfg.Output, lw)
	sw := &lineWriter{emit: func(s string) {
		if strings.Contains(s, "dom0init:") || strings.Contains(s, "xenvm:") || strings.Contains(s, "Panic") || strings.Contains(s, "panic") {
			t.Log("serial: " + s)
		}
	}}
	cfg.Serial = teeWriter(cfg.Serial, sw)
	res, err := Run(ctx, cfg)
	lw.flush()
	sw.flush()
	if err == nil && res.Status.ExitCode != 0 && bytes.Contains(res.Serial, []byte(TripleFaultMark)) {
		// A guest kernel triple-faulted early in its boot: a flake of
		// nested emulation, not of the code under test. Run once more.
		t.Logf("xenvm: %s; the run failed, so it is retried once. Its serial log ended:\n%s", TripleFaultMsg, Tail(res.Serial, 30))
		res, err = Run(ctx, cfg)
		lw.flush()
		sw.flush()
	}
	if res != nil {
		for i, h := range res.HungBoots {
			t.Logf("xenvm: boot %d stalled before dom0 was ready and was retried; its serial log ended:\n%s", i+1, h)
		}
	}
	if err != nil {
		t.Fatalf("%v", err)
	}
	t.Logf("xenvm: dom0 ready %.1f s after QEMU started (dom0 uptime %.1f s), job %.1f s, whole run %.1f s",
		res.Boot.Seconds(), res.Status.ReadySeconds, res.Status.RunSeconds, res.Total.Seconds())
	if res.Status.ExitCode != 0 {
		t.Fatalf("inside dom0, %s exited with status %d %s; serial log ends:\n%s", t.Name(), res.Status.ExitCode, res.Status.Error, Tail(res.Serial, 30))
	}
	return res
}

// TripleFaultMark is how Xen's console says that an HVM or PVH guest
// triple-faulted (and was shut down).
const TripleFaultMark = "Triple fault - invoking HVM shutdown"

// TripleFaultMsg explains a guest triple fault in a test: under nested
// emulation a Debian guest kernel (PVH, or HVM) seldom triple-faults early
// in its boot, whichever toolstack built the domain. Where: Xen's dumps
// put the guest's RIP right after an `in $0x42` of quick_pit_calibrate,
// with interrupts off. On an AMD CPU without CPUID leaf 0x16 nothing else
// gives the kernel its CPU frequency, and a PVH domain has no PIT, so each
// read returns 0xff and the loop runs its full 50000 rounds, two port
// reads each: 100000 I/O exits to Xen, each a nested VM exit that QEMU's
// TCG emulates, and now and then one ends in a triple fault, likelier on a
// busy host. The kernel has no option that skips that calibration
// (with clearcpuid=tsc, which would, a PVH guest printed nothing in six
// minutes). Other dumps hold Xen's own RIP and CR2 as the guest's state, a
// race between the threads of QEMU's multi-threaded TCG: the bed now runs
// one emulated CPU (defaultCPUs), with which the load that faulted both
// boots of a run before passed.
const TripleFaultMsg = "a guest triple-faulted early in its boot (a flake of guests under nested emulation)"

// GoTestJob is the job that runs one test (by its full name, subtests
// included) of a Go test binary in dom0, with the given test timeout.
func GoTestJob(binary, testName string, env []string, timeout time.Duration) (j hostjob.Job) {
	parts := strings.Split(testName, "/")
	for i, p := range parts {
		parts[i] = "^" + regexp.QuoteMeta(p) + "$"
	}
	j.Argv = []string{binary, "-test.run", strings.Join(parts, "/"), "-test.v", "-test.count=1", "-test.timeout=" + timeout.String()}
	j.Env = env
	j.Dir = ShareMount
	return j
}

// lineWriter passes on complete lines.
type lineWriter struct {
	mu   sync.Mutex
	buf  bytes.Buffer
	emit func(string)
}

func (w *lineWriter) Write(p []byte) (int, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.buf.Write(p)
	for {
		line, err := w.buf.ReadString('\n')
		if err != nil {
			w.buf.WriteString(line)
			return len(p), nil
		}
		w.emit(strings.TrimRight(line, "\r\n"))
	}
}

func (w *lineWriter) flush() {
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.buf.Len() > 0 {
		w.emit(w.buf.String())
		w.buf.Reset()
	}
}

// LineWriter returns a writer that calls emit with each complete line
// written to it (e.g. t.Log, for Config.Serial or Config.Output).
func LineWriter(emit func(line string)) io.Writer { return &lineWriter{emit: emit} }

func teeWriter(a, b io.Writer) io.Writer {
	if a == nil {
		return b
	}
	return io.MultiWriter(a, b)
}
