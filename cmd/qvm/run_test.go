package main

import (
	"bytes"
	"context"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// TestRunWithLocal checks --localcmd's plumbing with a real dom0 shell
// command and a stand-in for the remote side (the bed has no shell for the
// local command; the remote side's streams are the e2e test's): what the
// local command prints is the remote's input, what the remote prints the
// local command's input, and the remote's exit code is returned.
func TestRunWithLocal(t *testing.T) {
	var errOut bytes.Buffer
	a := &app{prog: "qvm-run", stdout: io.Discard, stderr: &errOut}
	var remoteGot string
	code := runWithLocal(context.Background(), a, "echo ping; read x; echo \"local got $x\" >&2", func(in io.Reader, out io.Writer) int {
		line := make([]byte, 5)
		if _, err := io.ReadFull(in, line); err != nil {
			t.Errorf("remote read: %v", err)
		}
		remoteGot = string(line)
		io.WriteString(out, "pong\n")
		return 7
	})
	if code != 7 || remoteGot != "ping\n" || !strings.Contains(errOut.String(), "local got pong") {
		t.Fatalf("code %d, remote got %q, local stderr %q", code, remoteGot, errOut.String())
	}
	if code := runWithLocal(context.Background(), a, "exit 3", func(in io.Reader, out io.Writer) int { return 0 }); code != 0 {
		t.Fatalf("a failing local command changed the remote's code: %d", code)
	}
	if !strings.Contains(errOut.String(), `--localcmd "exit 3": exit status 3`) {
		t.Errorf("the local command's failure is not reported: %q", errOut.String())
	}
}

// TestConsoleLog: qvm-console --log prints the console log of a VM that
// does not run, the rotated copy first, with what could drive a terminal
// replaced; --no-filter-escape-chars gives the bytes as they are.
func TestConsoleLog(t *testing.T) {
	e := seedSetup(t)
	logs := filepath.Join(e.dir, "log")
	os.MkdirAll(logs, 0o755)
	os.WriteFile(filepath.Join(logs, "my-new-vm.console.log.1"), []byte("old boot\n"), 0o644)
	os.WriteFile(filepath.Join(logs, "my-new-vm.console.log"), []byte("new \x1b]0;title\x07boot\r\nlogin: "), 0o644)
	e.expect(0, "old boot\nnew boot\r\nlogin: ", "", "qvm-console", "--log", "my-new-vm")
	e.expect(0, "old boot\nnew \x1b]0;title\x07boot\r\nlogin: ", "", "qvm-console", "--log", "--no-filter-escape-chars", "my-new-vm")
	e.expect(0, "", "", "qvm-console", "--log", "fedora")
}
