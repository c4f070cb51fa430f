// Command demo is `make demo`: it boots real Xen inside QEMU with the
// project's dom0 image and runs the Qubes workflows of the seeds with the
// real qvm commands, showing each command and what it printed, and checks
// what the guests saw. It ends with one line, `demo: N/M steps passed`,
// and exits non-zero if a step failed.
//
// The same binary runs on both sides: on the host it builds the boot and
// streams dom0's output; in dom0 (with -inside) it runs the steps.
package main

import (
	"context"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"regexp"
	"strings"
	"syscall"
	"time"

	"github.com/qvm-project/qvm/e2e/hostjob"
	"github.com/qvm-project/qvm/e2e/xenvm"
)

func main() {
	inside := flag.Bool("inside", false, "run the steps (in dom0)")
	timeout := flag.Duration("timeout", 15*time.Minute, "give up after this long")
	flag.Parse()
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if *inside {
		os.Exit(runSteps(ctx, os.Stdout))
	}
	os.Exit(host(ctx, *timeout))
}

// host boots the test bed and runs this binary inside it.
func host(ctx context.Context, timeout time.Duration) int {
	start := time.Now()
	p, err := xenvm.DefaultParts()
	if err == nil {
		if m := p.Missing(); len(m) > 0 {
			err = fmt.Errorf("parts not built (run make dom0-image guest-image dom0-qemu-image stubdom-image): %s", strings.Join(m, ", "))
		}
	}
	if err != nil {
		fmt.Fprintf(os.Stderr, "demo: %v\n", err)
		return 1
	}
	self, err := os.Executable()
	if err != nil {
		fmt.Fprintf(os.Stderr, "demo: %v\n", err)
		return 1
	}
	files := p.GuestFiles()
	files["demo"] = self
	extra, err := hvmParts(p, files)
	if err != nil {
		fmt.Fprintf(os.Stderr, "demo: %v\n", err)
		return 1
	}
	unlock, err := xenvm.LockBed(ctx, os.Stderr, "demo")
	if err != nil {
		fmt.Fprintf(os.Stderr, "demo: %v\n", err)
		return 1
	}
	defer unlock()
	progress := newProgress(os.Stderr, start)
	fmt.Fprintf(os.Stderr, "demo: booting Xen and dom0 in QEMU (software emulation: this takes a while)\n")
	var out strings.Builder
	res, err := xenvm.Run(ctx, xenvm.Config{
		Parts:        p,
		ExtraInitrds: extra,
		Files:        files,
		// The HVM guest's lines reach dom0 through Xen's console ring;
		// Xen's background scrubbing of free memory after boot would slow
		// the HVM's start for minutes under emulation.
		XenArgs: []string{"conring_size=1M", "bootscrub=0"},
		Job:     hostjob.Job{Argv: []string{xenvm.ShareMount + "/demo", "-inside"}, Dir: xenvm.ShareMount},
		Output:  io.MultiWriter(os.Stdout, &out),
		Serial:  progress,
		Timeout: timeout,
	})
	progress.done()
	if err != nil {
		fmt.Fprintf(os.Stderr, "demo: %v\n", err)
		return 1
	}
	fmt.Printf("demo: Xen+dom0 boot %.1f s, steps %.1f s, total wall time %.1f s\n",
		res.Boot.Seconds(), res.Status.RunSeconds, time.Since(start).Seconds())
	summary := regexp.MustCompile(`demo: \d+/\d+ steps passed`).FindString(out.String())
	if summary == "" {
		summary = "demo: 0/1 steps passed"
	}
	fmt.Println(summary)
	if res.Status.ExitCode != 0 {
		return 1
	}
	return 0
}

// progress turns dom0's boot messages into one progress line on a
// terminal (plain lines otherwise).
type progress struct {
	w     io.Writer
	start time.Time
	buf   []byte
	tty   bool
	shown bool
	over  bool // the demo's own output has started
}

func newProgress(w io.Writer, start time.Time) *progress {
	fi, err := os.Stderr.Stat()
	return &progress{w: w, start: start, tty: err == nil && fi.Mode()&os.ModeCharDevice != 0}
}

func (p *progress) Write(b []byte) (int, error) {
	p.buf = append(p.buf, b...)
	for {
		i := strings.IndexByte(string(p.buf), '\n')
		if i < 0 {
			break
		}
		line := strings.TrimRight(string(p.buf[:i]), "\r")
		p.buf = p.buf[i+1:]
		msg := ""
		switch {
		case strings.HasPrefix(line, "(XEN) Xen version"):
			msg = "Xen is booting"
		case strings.Contains(line, "dom0init:"):
			msg = "dom0: " + strings.TrimSpace(line[strings.Index(line, "dom0init:")+len("dom0init:"):])
		}
		if msg == "" || p.over {
			continue
		}
		if strings.Contains(line, "job: running") {
			p.done()
			p.over = true
			continue
		}
		el := time.Since(p.start).Seconds()
		if p.tty {
			fmt.Fprintf(p.w, "\r\033[K[%5.0fs] %s", el, trim(msg, 100))
			p.shown = true
		} else {
			fmt.Fprintf(p.w, "[%5.0fs] %s\n", el, msg)
		}
	}
	return len(b), nil
}

func (p *progress) done() {
	if p.tty && p.shown {
		fmt.Fprintln(p.w)
		p.shown = false
	}
}

func trim(s string, n int) string {
	if len(s) > n {
		return s[:n]
	}
	return s
}
