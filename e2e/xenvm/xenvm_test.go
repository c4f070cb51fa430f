package xenvm

import (
	"bytes"
	"context"
	"errors"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/qvm-project/qvm/e2e/hostjob"
)

// fakeParts makes files that stand in for the parts where only their
// names matter.
func fakeParts(t *testing.T) Parts {
	dir := t.TempDir()
	p := PartsIn(dir)
	for _, f := range []string{p.Xen, p.Kernel, p.Dom0Image, p.GuestImage} {
		if err := os.WriteFile(f, []byte(filepath.Base(f)), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	return p
}

func TestQEMUArgs(t *testing.T) {
	p := fakeParts(t)
	cfg, err := Config{Parts: p, Job: hostjob.Job{Argv: []string{"/bin/true"}}, KernelArgs: []string{"quiet"}}.withDefaults()
	if err != nil {
		t.Fatal(err)
	}
	args, err := qemuArgs(cfg, p.Dom0Image, "/s", "/l")
	if err != nil {
		t.Fatal(err)
	}
	joined := strings.Join(args, " ")
	for _, want := range []string{
		"-no-reboot", "-nic none", "-cpu qemu64,+svm,+npt", "-m 3072", "-smp 1", "-kernel " + p.Xen,
		"dom0_mem=1024M,max:1024M", "-serial file:/l", "-monitor none",
		"-initrd " + p.Kernel + " console=hvc0 earlyprintk=xen qvm.share=qvmhost qvm.run=job quiet," + p.Dom0Image,
		"-virtfs local,path=/s,mount_tag=qvmhost,",
	} {
		if !strings.Contains(joined, want) {
			t.Errorf("QEMU command lacks %q:\n%s", want, joined)
		}
	}

	cfg.NoHVM = true
	cfg.Job = hostjob.Job{}
	args, _ = qemuArgs(cfg, p.Dom0Image, "/s", "/l")
	joined = strings.Join(args, " ")
	if strings.Contains(joined, "svm,") || strings.Contains(joined, "+npt") || !strings.Contains(joined, "qemu64,-svm") {
		t.Errorf("NoHVM: CPU still offers SVM/NPT:\n%s", joined)
	}
	if !strings.Contains(joined, "qvm.run=none") {
		t.Errorf("no job: want qvm.run=none:\n%s", joined)
	}
}

func TestQEMUArgsRejectsCommas(t *testing.T) {
	p := fakeParts(t)
	cfg, _ := Config{Parts: p, KernelArgs: []string{"a=b,c"}}.withDefaults()
	if _, err := qemuArgs(cfg, p.Dom0Image, "/s", "/l"); err == nil {
		t.Error("a kernel argument with a comma was accepted")
	}
	cfg.KernelArgs = nil
	if _, err := qemuArgs(cfg, p.Dom0Image, "/s,x", "/l"); err == nil {
		t.Error("a share path with a comma was accepted")
	}
}

func TestConfigChecks(t *testing.T) {
	p := fakeParts(t)
	for name, cfg := range map[string]Config{
		"missing part":  {Parts: Parts{Xen: "/nonexistent/xen", Kernel: p.Kernel, Dom0Image: p.Dom0Image}},
		"relative argv": {Parts: p, Job: hostjob.Job{Argv: []string{"true"}}},
		"file over job": {Parts: p, Files: map[string]string{hostjob.JobFile: p.Xen}},
		"file in out":   {Parts: p, Files: map[string]string{"out/x": p.Xen}},
		"file escapes":  {Parts: p, Files: map[string]string{"../x": p.Xen}},
		"absolute file": {Parts: p, Files: map[string]string{"/x": p.Xen}},
	} {
		if _, err := Run(context.Background(), cfg); err == nil {
			t.Errorf("%s: Run accepted the config", name)
		}
	}
}

func TestJoinInitrds(t *testing.T) {
	dir := t.TempDir()
	a, b := filepath.Join(dir, "a"), filepath.Join(dir, "b")
	os.WriteFile(a, []byte("AAA"), 0o644)
	os.WriteFile(b, []byte("BB"), 0o644)
	if got, _ := joinInitrds(dir, a, nil); got != a {
		t.Errorf("no extras: got %s, want the image itself", got)
	}
	got, err := joinInitrds(dir, a, []string{b})
	if err != nil {
		t.Fatal(err)
	}
	if data, _ := os.ReadFile(got); string(data) != "AAABB" {
		t.Errorf("joined initrd %q, want AAABB", data)
	}
}

func TestGoTestJob(t *testing.T) {
	j := GoTestJob("/mnt/host/x.test", "TestA/sub.1", []string{"K=V"}, time.Minute)
	if err := j.Validate(); err != nil {
		t.Fatal(err)
	}
	i := slices.Index(j.Argv, "-test.run")
	if i < 0 {
		t.Fatalf("no -test.run in %q", j.Argv)
	}
	pat := j.Argv[i+1]
	if !slices.Contains(j.Argv, "-test.timeout=1m0s") {
		t.Errorf("no -test.timeout=1m0s in %q", j.Argv)
	}
	levels := strings.Split(pat, "/")
	if len(levels) != 2 {
		t.Fatalf("pattern %q: want one level per test name level", pat)
	}
	if !regexp.MustCompile(levels[1]).MatchString("sub.1") || regexp.MustCompile(levels[1]).MatchString("sub11") {
		t.Errorf("pattern %q does not match the subtest name exactly", pat)
	}
	if !regexp.MustCompile(levels[0]).MatchString("TestA") || regexp.MustCompile(levels[0]).MatchString("TestAB") {
		t.Errorf("pattern %q does not match the test name exactly", pat)
	}
}

func TestFollower(t *testing.T) {
	path := filepath.Join(t.TempDir(), "log")
	var got bytes.Buffer
	f := &follower{path: path, w: &got}
	f.poll() // no file yet
	os.WriteFile(path, []byte("one\n"), 0o644)
	f.poll()
	fh, _ := os.OpenFile(path, os.O_APPEND|os.O_WRONLY, 0)
	fh.WriteString("two\n")
	fh.Close()
	f.poll()
	f.poll()
	if got.String() != "one\ntwo\n" || string(f.data) != "one\ntwo\n" {
		t.Fatalf("followed %q (data %q), want each line once", got.String(), f.data)
	}
}

func TestLineWriter(t *testing.T) {
	var lines []string
	w := LineWriter(func(s string) { lines = append(lines, s) }).(*lineWriter)
	w.Write([]byte("a\nb"))
	w.Write([]byte("c\r\nd"))
	w.flush()
	if want := []string{"a", "bc", "d"}; !slices.Equal(lines, want) {
		t.Fatalf("lines %q, want %q", lines, want)
	}
}

// TestRunKillsQEMUOnTimeout runs a stand-in "QEMU" that never exits: Run
// must stop it at the deadline and report that no status came back.
func TestRunKillsQEMUOnTimeout(t *testing.T) {
	p := fakeParts(t)
	fake := filepath.Join(t.TempDir(), "qemu")
	pidFile := filepath.Join(t.TempDir(), "pid")
	if err := os.WriteFile(fake, []byte("#!/bin/sh\necho $$ > "+pidFile+"\nexec sleep 600\n"), 0o755); err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	_, err := Run(context.Background(), Config{Parts: p, QEMU: fake, Timeout: 2 * time.Second, Job: hostjob.Job{Argv: []string{"/bin/true"}}})
	if !errors.Is(err, ErrNoStatus) {
		t.Fatalf("Run: %v, want ErrNoStatus", err)
	}
	if d := time.Since(start); d > time.Minute {
		t.Fatalf("Run took %s after a 2 s timeout", d)
	}
	b, rerr := os.ReadFile(pidFile)
	if rerr != nil {
		t.Fatalf("fake QEMU never ran: %v", rerr)
	}
	pid := strings.TrimSpace(string(b))
	if _, err := os.Stat("/proc/" + pid); err == nil {
		st, _ := os.ReadFile("/proc/" + pid + "/stat")
		if !strings.Contains(string(st), ") Z ") {
			t.Fatalf("fake QEMU (pid %s) still running after Run returned: %s", pid, st)
		}
	}
}

// TestRunRetriesStalledBoot: a stand-in "QEMU" that stalls on its first
// boot and completes the job on the second; Run must kill the first, boot
// again and return the second boot's status, recording the stalled one.
func TestRunRetriesStalledBoot(t *testing.T) {
	p := fakeParts(t)
	dir := t.TempDir()
	fake := filepath.Join(dir, "qemu")
	script := `#!/bin/sh
count=` + dir + `/count
n=$(cat $count 2>/dev/null || echo 0); n=$((n+1)); echo $n > $count
for a in "$@"; do
  case "$a" in
    file:*) serial=${a#file:} ;;
    local,path=*) share=${a#local,path=}; share=${share%%,*} ;;
  esac
done
if [ $n = 1 ]; then echo "kernel: stuck" > $serial; exec sleep 600; fi
echo "dom0init: [   1.00] ready: dom0 up in 1.00 s" > $serial
mkdir -p $share/out
echo hello > $share/out/output
echo '{"exit_code": 3}' > $share/out/status.json
`
	if err := os.WriteFile(fake, []byte(script), 0o755); err != nil {
		t.Fatal(err)
	}
	var serial bytes.Buffer
	res, err := Run(context.Background(), Config{Parts: p, QEMU: fake, BootTimeout: time.Second, Timeout: time.Minute, Serial: &serial, Job: hostjob.Job{Argv: []string{"/bin/true"}}})
	if err != nil {
		t.Fatal(err)
	}
	if res.BootAttempts != 2 || len(res.HungBoots) != 1 || !strings.Contains(res.HungBoots[0], "stuck") {
		t.Errorf("attempts %d, hung boots %q: want 2 attempts, one stalled boot", res.BootAttempts, res.HungBoots)
	}
	if res.Status.ExitCode != 3 || string(res.Output) != "hello\n" || res.Boot == 0 {
		t.Errorf("status %+v, output %q, boot %s: want the second boot's", res.Status, res.Output, res.Boot)
	}
	if !strings.Contains(serial.String(), "booting again") {
		t.Errorf("serial stream does not say the boot was retried:\n%s", serial.String())
	}

	// With one attempt allowed, the stalled boot is the result.
	os.Remove(filepath.Join(dir, "count"))
	_, err = Run(context.Background(), Config{Parts: p, QEMU: fake, BootTimeout: time.Second, BootAttempts: 1, Timeout: time.Minute, Job: hostjob.Job{Argv: []string{"/bin/true"}}})
	if !errors.Is(err, ErrNoStatus) || !strings.Contains(err.Error(), "not ready") {
		t.Fatalf("Run with one attempt: %v, want ErrNoStatus saying dom0 was not ready", err)
	}
}

// TestLockBed: a second lockBed waits while the first holds the lock (and
// says so once), gives up when its context ends, and gets the lock once it
// is released.
func TestLockBed(t *testing.T) {
	dir := t.TempDir()
	unlock, err := lockBed(context.Background(), dir, nil)
	if err != nil {
		t.Fatal(err)
	}
	var waits int
	ctx, cancel := context.WithTimeout(context.Background(), 2*lockPoll+lockPoll/2)
	defer cancel()
	if _, err := lockBed(ctx, dir, func(string) { waits++ }); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("second lockBed while the lock is held: %v, want DeadlineExceeded", err)
	}
	if waits != 1 {
		t.Errorf("waiting called %d times, want once", waits)
	}
	unlock()
	unlock2, err := lockBed(context.Background(), dir, func(string) { t.Error("waited for a released lock") })
	if err != nil {
		t.Fatal(err)
	}
	unlock2()
}
