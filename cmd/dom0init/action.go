package main

import (
	"fmt"
	"path/filepath"
	"strings"

	"github.com/u-root/u-root/pkg/shlex"
)

// actionKind is what dom0init does once dom0 is ready.
type actionKind int

const (
	actShell actionKind = iota // interactive shell on the console
	actJob                     // the job in the host share
	actExec                    // a command from the kernel command line
	actNone                    // nothing: power off at once
)

// action is dom0init's reading of its kernel command line.
type action struct {
	kind  actionKind
	argv  []string // for actExec
	share string   // 9p tag to mount on /mnt/host, "" for none
	echo  bool     // copy job output to the console
}

// shareMount is where the host's 9p share is mounted in dom0.
const shareMount = "/mnt/host"

// flags looks up kernel command line parameters (a *cmdline.CmdLine).
type flags interface {
	Flag(name string) (string, bool)
}

// parseAction reads the qvm.* parameters of a kernel command line.
func parseAction(cl flags) (action, error) {
	var a action
	a.share, _ = cl.Flag("qvm.share")
	if v, ok := cl.Flag("qvm.echo"); ok && v != "0" {
		a.echo = true
	}
	run, ok := cl.Flag("qvm.run")
	if !ok {
		run = "shell"
	}
	switch {
	case run == "shell":
		a.kind = actShell
	case run == "none":
		a.kind = actNone
	case run == "job":
		a.kind = actJob
		if a.share == "" {
			return a, fmt.Errorf("qvm.run=job needs qvm.share=TAG (the 9p share holding %s)", "job.json")
		}
	case strings.HasPrefix(run, "exec:"):
		a.kind = actExec
		a.argv = shlex.Argv(strings.TrimPrefix(run, "exec:"))
		if len(a.argv) == 0 || !filepath.IsAbs(a.argv[0]) {
			return a, fmt.Errorf("qvm.run=%q: want exec:/absolute/path [args...]", run)
		}
	default:
		return a, fmt.Errorf("qvm.run=%q: want shell, job, none or exec:/path [args...]", run)
	}
	return a, nil
}
