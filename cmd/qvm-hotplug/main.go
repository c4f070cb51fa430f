// Command qvm-hotplug is the hotplug script libxl runs in dom0 for the
// devices of qvm's VMs: installed as /etc/xen/scripts/vif-route-qvm, it
// filters and routes a VM interface dom0 serves (package vifroute); as
// /etc/xen/scripts/block-qvm, it hands a VM disk on a loop device to
// blkback (package blkback).
//
// libxl runs it once per device on every start and stop, so it is a small
// static pure-Go binary apart from qvm: no cgo, no libxl, no shared
// libraries to load, which makes its exec a fraction of the big qvm
// binary's. `qvm-hotplug --list-links` prints the paths to link to it;
// `qvm-hotplug SCRIPT ARGS...` runs SCRIPT without the link.
package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"

	"github.com/qvm-project/qvm/termtext"
	"github.com/qvm-project/qvm/xenstore"
)

// scriptsDir is where libxl looks for the hotplug scripts a device config
// names.
const scriptsDir = "/etc/xen/scripts"

// script is one hotplug script this binary is.
type script struct {
	name string
	run  func(ctx context.Context, env *hookEnv, args []string) error
}

// scripts is the table of the scripts, by the name a device config gives
// (domconfig.VifScript, domconfig.BlockScript).
func scripts() []script {
	return []script{
		{name: "vif-route-qvm", run: runVif},
		{name: "block-qvm", run: runBlock},
	}
}

// hookEnv is what a script runs with besides its arguments.
type hookEnv struct {
	getenv func(string) string
	// dial connects to xenstored (xenstore.Dial outside tests).
	dial func(context.Context) (*xenstore.Client, error)
}

// xenstore connects to xenstored.
func (e *hookEnv) xenstore(ctx context.Context) (*xenstore.Client, error) {
	xs, err := e.dial(ctx)
	if err != nil {
		return nil, fmt.Errorf("connect to xenstored: %w", err)
	}
	return xs, nil
}

// usageError marks a mistake in how the script was called (exit code 2).
type usageError struct{ msg string }

func (e usageError) Error() string { return e.msg }

func usagef(format string, args ...any) error { return usageError{fmt.Sprintf(format, args...)} }

// run dispatches argv to a script and returns the exit code.
func run(ctx context.Context, argv []string, stderr, stdout io.Writer, getenv func(string) string, dial func(context.Context) (*xenstore.Client, error)) int {
	name, args := filepath.Base(argv[0]), argv[1:]
	if find(name) == nil {
		if len(args) == 0 {
			fmt.Fprintln(stderr, "usage: qvm-hotplug --list-links | SCRIPT ARGS... (libxl runs it as /etc/xen/scripts/SCRIPT)")
			return 2
		}
		if args[0] == "--list-links" {
			for _, s := range scripts() {
				fmt.Fprintln(stdout, filepath.Join(scriptsDir, s.name))
			}
			return 0
		}
		name, args = args[0], args[1:]
	}
	s := find(name)
	if s == nil {
		fmt.Fprintf(stderr, "qvm-hotplug: unknown script %q (qvm-hotplug --list-links lists them)\n", name)
		return 2
	}
	env := &hookEnv{
		getenv: getenv,
		dial:   dial,
	}
	if err := s.run(ctx, env, args); err != nil {
		// The message can quote xenstore values a driver domain or the
		// VM's backend wrote: shown with control characters stripped.
		fmt.Fprintf(stderr, "%s: error: %s\n", s.name, termtext.Lines(err.Error()))
		var ue usageError
		if errors.As(err, &ue) {
			return 2
		}
		return 1
	}
	return 0
}

func find(name string) *script {
	for _, s := range scripts() {
		if s.name == name {
			return &s
		}
	}
	return nil
}

func main() {
	os.Exit(run(context.Background(), os.Args, os.Stderr, os.Stdout, os.Getenv, xenstore.Dial))
}
