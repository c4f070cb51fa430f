package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os/exec"

	"github.com/qvm-project/qvm/qrexec"
)

// serveShell serves qubes.VMShell: Qubes' dom0 sends the command as the
// first line of the service's input ("COMMAND; exit\n") and the caller's
// own input after it. The line is read here, one message at a time and
// bounded, and run with shell -c; what followed it in the same message
// and the messages after are the command's input.
func serveShell(ctx context.Context, rw io.ReadWriter, cmd *exec.Cmd, shell string) error {
	if _, err := qrexec.SayHello(rw); err != nil {
		return err
	}
	var line, rest []byte
	for {
		m, err := qrexec.ReadMessage(rw, qrexec.MaxDataChunk)
		if err != nil {
			return err
		}
		if m.Type != qrexec.DataStdin {
			return fmt.Errorf("%w: %v before the shell's command", qrexec.ErrProtocol, m.Type)
		}
		if len(m.Data) == 0 { // input ended: the line is all there is
			break
		}
		if i := indexByte(m.Data, '\n'); i >= 0 {
			line, rest = append(line, m.Data[:i]...), m.Data[i+1:]
			break
		}
		line = append(line, m.Data...)
		if len(line) > maxShellLine {
			return errors.New("qubes.VMShell: command line too long")
		}
	}
	cmd.Path, cmd.Args = shell, []string{shell, "-c", string(line)}
	if lp, err := exec.LookPath(shell); err == nil {
		cmd.Path = lp
	}
	return qrexec.ServeAfterHello(ctx, rw, cmd, rest)
}

func indexByte(b []byte, c byte) int {
	for i, x := range b {
		if x == c {
			return i
		}
	}
	return -1
}
