package qrexec

import (
	"os/exec"
	"syscall"
)

// signalOf is the number of the signal that ended a process.
func signalOf(ee *exec.ExitError) int {
	if ws, ok := ee.Sys().(syscall.WaitStatus); ok && ws.Signaled() {
		return int(ws.Signal())
	}
	return 0
}
