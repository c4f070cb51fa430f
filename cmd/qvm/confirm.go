package main

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"os"
	"strings"

	"golang.org/x/term"
)

// errNoTerminal is the refusal to ask a question with nobody to answer it.
var errNoTerminal = errors.New("standard input is not a terminal, so nobody can confirm")

// stdinIsTerminal reports whether the command's standard input is a
// terminal (a person can answer a question).
func (a *app) stdinIsTerminal() bool {
	f, ok := a.stdin.(*os.File)
	return ok && term.IsTerminal(int(f.Fd()))
}

// ask writes prompt on stdout (as Qubes' input() does) and reads one line
// of answer from a terminal; without a terminal it fails with
// errNoTerminal and reads nothing.
func (a *app) ask(prompt string) (string, error) {
	if !a.stdinIsTerminal() {
		return "", errNoTerminal
	}
	io.WriteString(a.stdout, prompt)
	if a.stdinLines == nil {
		a.stdinLines = bufio.NewReader(a.stdin)
	}
	line, err := a.stdinLines.ReadString('\n')
	switch {
	case errors.Is(err, io.EOF):
		// End of input (^D) answers nothing: no.
		fmt.Fprintln(a.stdout)
	case err != nil:
		return "", fmt.Errorf("read the answer: %w", err)
	}
	return strings.TrimRight(line, "\r\n"), nil
}

// stdoutIsTerminal reports whether the command writes to a terminal
// (Qubes' listings leave out repeated cells or headers depending on it).
func (a *app) stdoutIsTerminal() bool {
	f, ok := a.stdout.(*os.File)
	return ok && term.IsTerminal(int(f.Fd()))
}
