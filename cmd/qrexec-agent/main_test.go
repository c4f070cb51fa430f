package main

import (
	"bytes"
	"context"
	"errors"
	"io"
	"log/slog"
	"net"
	"os"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/qvm-project/qvm/qrexec"
)

func socketPair(t *testing.T) (net.Conn, net.Conn) {
	t.Helper()
	fds, err := unix.Socketpair(unix.AF_UNIX, unix.SOCK_STREAM|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		t.Fatal(err)
	}
	conn := func(fd int) net.Conn {
		f := os.NewFile(uintptr(fd), "socketpair")
		defer f.Close()
		c, err := net.FileConn(f)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { c.Close() })
		return c
	}
	return conn(fds[0]), conn(fds[1])
}

func testAgent() *agent {
	return &agent{log: slog.New(slog.NewTextHandler(io.Discard, nil)), defaultUser: "no-such-user-here", shell: "/bin/sh"}
}

// TestVMShell runs qubes.VMShell as dom0's qvm-run sends it: the command
// line first, then the caller's input in the same and later messages.
func TestVMShell(t *testing.T) {
	a := testAgent()
	cmd, shell, err := a.command(qrexec.Command{User: "DEFAULT", Service: "qubes.VMShell", Source: "dom0"})
	if err != nil || !shell {
		t.Fatalf("command = %v, %v, %v", cmd, shell, err)
	}
	dom0, vm := socketPair(t)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	served := make(chan error, 1)
	go func() { served <- serveShell(ctx, vm, cmd, a.shell); vm.Close() }()
	in := io.MultiReader(strings.NewReader("read x; echo \"got $x\" $QREXEC_REMOTE_DOMAIN; cat; exit 5; exit\nline one\n"), strings.NewReader("the rest\n"))
	var out bytes.Buffer
	code, err := qrexec.Run(ctx, dom0, in, &out, io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	if err := <-served; err != nil {
		t.Fatal(err)
	}
	if code != 5 || out.String() != "got line one dom0\nthe rest\n" {
		t.Fatalf("code %d, output %q", code, out.String())
	}
}

func TestCommand(t *testing.T) {
	a := testAgent()
	// DEFAULT falls back to root when the default user does not exist.
	cmd, _, err := a.command(qrexec.Command{User: "DEFAULT", Command: "id"})
	if err != nil || !slicesHave(cmd.Env, "USER=root") || cmd.Args[0] != "/bin/sh" || cmd.Args[2] != "id" {
		t.Fatalf("DEFAULT command: %v %v %v", cmd.Args, cmd.Env, err)
	}
	if _, _, err := a.command(qrexec.Command{User: "no-such-user-here", Command: "id"}); err == nil || !strings.Contains(err.Error(), "no-such-user-here") {
		t.Fatalf("unknown user: %v", err)
	}
	// qubes.VMExec: the program is looked up on the command's PATH.
	cmd, _, err = a.command(qrexec.Command{User: "root", Service: "qubes.VMExec", Arg: qrexec.EncodeVMExec([]string{"sh", "-c", "echo $0", "x y"})})
	if err != nil || cmd.Err != nil || !strings.HasSuffix(cmd.Path, "/sh") || strings.Join(cmd.Args[1:], "|") != "-c|echo $0|x y" {
		t.Fatalf("VMExec: %v %v %v %v", cmd.Path, cmd.Args, cmd.Err, err)
	}
	cmd, _, _ = a.command(qrexec.Command{User: "root", Service: "qubes.VMExec", Arg: "no-2Dsuch-2Dprogram"})
	if cmd.Err == nil {
		t.Fatal("a missing program was found")
	}
	for _, arg := range []string{"", "a-zz"} {
		if _, _, err := a.command(qrexec.Command{User: "root", Service: "qubes.VMExec", Arg: arg}); err == nil {
			t.Errorf("VMExec %q accepted", arg)
		}
	}
	if _, _, err := a.command(qrexec.Command{User: "root", Service: "qubes.NoSuch"}); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("missing service: %v", err)
	}
}

func slicesHave(s []string, v string) bool {
	for _, x := range s {
		if x == v {
			return true
		}
	}
	return false
}
