// Command qrexec-agent is the guest side of qrexec: a small static
// program any Linux VM runs (as root) so that dom0 can run commands in it
// with qvm-run, compatibly with Qubes' protocol (package qrexec).
//
// It serves the control channel to dom0 (vchan port 512) and, for each
// EXEC_CMDLINE dom0 sends, connects to the data channel it names, runs
// the command as the user it names ("root", or DEFAULT: the -default-user)
// and carries its standard streams and exit code. Commands:
//
//	USER:COMMAND                        /bin/sh -c COMMAND
//	USER:QUBESRPC qubes.VMShell SRC     the first line of input is the
//	                                    command for /bin/sh -c, the rest its input
//	USER:QUBESRPC qubes.VMExec+ARGS SRC the program and arguments ARGS encode
//	USER:QUBESRPC SERVICE[+ARG] SRC     /etc/qubes-rpc/SERVICE [ARG]
//
// Installing it in a Linux VM: copy the binary to /usr/local/sbin and
// start it at boot as root (a systemd unit with ExecStart=
// /usr/local/sbin/qrexec-agent and Restart=always); the kernel needs
// the xen-evtchn, xen-gntdev and xen-gntalloc drivers (modules of the
// same names in Debian's kernels) and /dev/xen/xenbus. A VM that serves
// an ISO to another VM's install (qvm-start --cdrom=VM:/path) needs
// losetup and stat in its PATH and the loop and xen-blkback drivers
// loaded at boot (/etc/modules-load.d).
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/exec"
	"os/signal"
	"os/user"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/qvm-project/qvm/qrexec"
	"github.com/qvm-project/qvm/vchan"
	"github.com/qvm-project/qvm/xenstore"
)

const (
	controlPort = 512
	// The control channel's rings: 4 KiB each way, as Qubes'.
	controlOrder = 12
	rpcDir       = "/etc/qubes-rpc"
	// maxShellLine bounds qubes.VMShell's command line.
	maxShellLine = qrexec.MaxCmdline
)

type agent struct {
	xs          *xenstore.Client
	log         *slog.Logger
	defaultUser string
	shell       string
}

func main() {
	defUser := flag.String("default-user", "user", "the user DEFAULT stands for (root when it does not exist)")
	shell := flag.String("shell", "/bin/sh", "the shell that runs commands")
	flag.Parse()
	log := slog.New(slog.NewTextHandler(os.Stderr, nil))
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, syscall.SIGINT)
	defer stop()
	xs, err := xenstore.Dial(ctx)
	if err != nil {
		log.Error("connect to xenstore", "err", err)
		os.Exit(1)
	}
	defer xs.Close()
	a := &agent{xs: xs, log: log, defaultUser: *defUser, shell: *shell}
	a.serve(ctx)
}

// serve offers the control channel to dom0 again each time it ends.
func (a *agent) serve(ctx context.Context) {
	for ctx.Err() == nil {
		if err := a.control(ctx); err != nil && ctx.Err() == nil {
			a.log.Warn("control channel", "err", err)
			time.Sleep(time.Second)
		}
	}
}

func (a *agent) control(ctx context.Context) error {
	conn, err := vchan.Server(ctx, a.xs, 0, controlPort, controlOrder, controlOrder)
	if err != nil {
		return err
	}
	defer conn.Close()
	stop := context.AfterFunc(ctx, func() { conn.Close() })
	defer stop()
	if err := conn.WaitConnected(ctx); err != nil {
		return err
	}
	if _, err := qrexec.SayHello(conn); err != nil {
		return err
	}
	a.log.Info("dom0 connected")
	for {
		m, err := qrexec.ReadMessage(conn, qrexec.MaxControl)
		if err != nil {
			if errors.Is(err, io.EOF) {
				return nil
			}
			return err
		}
		switch m.Type {
		case qrexec.ExecCmdline, qrexec.JustExec:
			p, err := qrexec.ParseExecParams(m.Data)
			if err != nil {
				a.log.Warn("bad request", "err", err)
				continue
			}
			go a.run(ctx, p, m.Type == qrexec.JustExec)
		case qrexec.ServiceRefused, qrexec.ServiceConnect:
		default:
			a.log.Warn("unexpected message on the control channel", "type", m.Type)
		}
	}
}

// run serves one request.
func (a *agent) run(ctx context.Context, p qrexec.ExecParams, detached bool) {
	log := a.log.With("cmdline", p.Cmdline, "port", p.ConnectPort)
	c, err := qrexec.ParseCommand(p.Cmdline)
	if err != nil {
		log.Warn("bad command line", "err", err)
		return
	}
	cctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	conn, err := vchan.Client(cctx, a.xs, p.ConnectDomain, int(p.ConnectPort))
	cancel()
	if err != nil {
		log.Warn("connect to the data channel", "err", err)
		return
	}
	defer conn.Close()
	cmd, stdinPrefix, err := a.command(c)
	if err != nil {
		// Say why on the channel, with the code Qubes gives.
		code := qrexec.ExitRefused
		if errors.Is(err, os.ErrNotExist) {
			code = qrexec.ExitNotFound
		}
		if _, herr := qrexec.SayHello(conn); herr == nil {
			_ = qrexec.WriteMessage(conn, qrexec.DataStderr, []byte("qrexec-agent: "+err.Error()+"\n"))
			_ = qrexec.WriteMessage(conn, qrexec.DataStdout, nil)
			_ = qrexec.WriteMessage(conn, qrexec.DataStderr, nil)
			_ = qrexec.WriteMessage(conn, qrexec.DataExitCode, qrexec.ExitCodeData(code))
		}
		log.Warn("refused", "err", err)
		return
	}
	_ = detached // JUST_EXEC runs the same way; its caller ignores the streams
	if stdinPrefix {
		err = serveShell(ctx, conn, cmd, a.shell)
	} else {
		err = qrexec.Serve(ctx, conn, cmd)
	}
	if err != nil {
		log.Warn("request ended", "err", err)
	}
}

// command builds the process for c; shell is true for qubes.VMShell,
// whose command comes first on its input.
func (a *agent) command(c qrexec.Command) (cmd *exec.Cmd, shell bool, err error) {
	u, err := a.user(c.User)
	if err != nil {
		return nil, false, err
	}
	switch {
	case c.Service == "":
		cmd = exec.Command(a.shell, "-c", c.Command)
	case c.Service == "qubes.VMShell":
		cmd, shell = exec.Command(a.shell, "-c", ""), true
	case c.Service == "qubes.VMExec":
		args, err := qrexec.DecodeVMExec(c.Arg)
		if err != nil || len(args) == 0 || args[0] == "" {
			return nil, false, fmt.Errorf("qubes.VMExec: bad arguments %q", c.Arg)
		}
		cmd = exec.Command(args[0], args[1:]...)
		if !strings.Contains(args[0], "/") {
			// Found on the command's PATH, not the agent's.
			cmd.Path, cmd.Err = lookPath(args[0])
		}
	default:
		path := filepath.Join(rpcDir, c.Service)
		if _, err := os.Stat(path); err != nil {
			return nil, false, fmt.Errorf("service %s: %w", c.Service, err)
		}
		cmd = exec.Command(path)
		if c.Arg != "" {
			cmd.Args = append(cmd.Args, c.Arg)
		}
	}
	uid, _ := strconv.Atoi(u.Uid)
	gid, _ := strconv.Atoi(u.Gid)
	cmd.SysProcAttr = &syscall.SysProcAttr{Setsid: true}
	if uid != os.Getuid() {
		cmd.SysProcAttr.Credential = &syscall.Credential{Uid: uint32(uid), Gid: uint32(gid)}
	}
	cmd.Env = []string{
		"HOME=" + u.HomeDir, "USER=" + u.Username, "LOGNAME=" + u.Username,
		"PATH=" + commandPath,
		"QREXEC_REMOTE_DOMAIN=" + c.Source, "QREXEC_SERVICE_ARGUMENT=" + c.Arg,
	}
	if fi, err := os.Stat(u.HomeDir); err == nil && fi.IsDir() {
		cmd.Dir = u.HomeDir
	} else {
		cmd.Dir = "/"
	}
	return cmd, shell, nil
}

// commandPath is the PATH commands run with.
const commandPath = "/usr/local/bin:/usr/bin:/bin:/usr/local/sbin:/usr/sbin:/sbin:/bbin"

// lookPath finds a program on commandPath.
func lookPath(name string) (string, error) {
	for _, dir := range filepath.SplitList(commandPath) {
		p := filepath.Join(dir, name)
		if fi, err := os.Stat(p); err == nil && fi.Mode().IsRegular() && fi.Mode()&0o111 != 0 {
			return p, nil
		}
	}
	return "", fmt.Errorf("%s: %w", name, os.ErrNotExist)
}

// user resolves a request's user name.
func (a *agent) user(name string) (*user.User, error) {
	if name == "DEFAULT" {
		if u, err := user.Lookup(a.defaultUser); err == nil {
			return u, nil
		}
		name = "root"
	}
	u, err := user.Lookup(name)
	if err != nil {
		if name == "root" {
			return &user.User{Uid: "0", Gid: "0", Username: "root", HomeDir: "/root"}, nil
		}
		return nil, fmt.Errorf("no user %q in this VM", name)
	}
	return u, nil
}
