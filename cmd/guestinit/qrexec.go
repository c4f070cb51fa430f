package main

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"strings"
	"time"

	"github.com/qvm-project/qvm/bootinit"
	"github.com/qvm-project/qvm/vchan"
	"github.com/qvm-project/qvm/xenstore"
)

// qrexec in the test guest (qvm.qrexec=1): the Xen drivers vchan needs,
// busybox's commands as /bin (its sh is the agent's shell), a "user"
// account (uid 1000) for DEFAULT, and the agent, left running. loop and
// xen-blkback let the guest serve a disc of its own to another VM
// (qvm-start --cdrom=VM:/path): a loop device, and blkback to serve it.

const (
	agentPath   = "/bbin/qrexec-agent"
	busyboxPath = "/bin/busybox"
)

var agentModules = []bootinit.Module{{Name: "xen-evtchn"}, {Name: "xen-gntdev"}, {Name: "xen-gntalloc"}, {Name: "loop"}, {Name: "xen-blkback"}}

func startAgent() error {
	if err := bootinit.LoadModules(agentModules); err != nil {
		return err
	}
	if out, err := exec.Command(busyboxPath, "--install", "-s", "/bin").CombinedOutput(); err != nil {
		return fmt.Errorf("busybox --install: %v: %s", err, out)
	}
	if err := addUsers(); err != nil {
		return err
	}
	cmd := exec.Command(agentPath)
	cmd.Stdout, cmd.Stderr = os.Stdout, os.Stdout
	if err := cmd.Start(); err != nil {
		return fmt.Errorf("start %s: %w", agentPath, err)
	}
	say("qrexec agent started (pid %d)", cmd.Process.Pid)
	return nil
}

// addUsers writes root and user into /etc/passwd and /etc/group unless
// they are there, and user's home.
func addUsers() error {
	if err := os.MkdirAll("/etc", 0o755); err != nil {
		return err
	}
	for _, f := range []struct{ path, lines string }{
		{"/etc/passwd", "root:x:0:0:root:/root:/bin/sh\nuser:x:1000:1000:user:/home/user:/bin/sh\n"},
		{"/etc/group", "root:x:0:\nuser:x:1000:\n"},
	} {
		old, err := os.ReadFile(f.path)
		if err != nil && !os.IsNotExist(err) {
			return err
		}
		var add strings.Builder
		for _, l := range strings.SplitAfter(f.lines, "\n") {
			name, _, _ := strings.Cut(l, ":")
			if l != "" && !strings.Contains("\n"+string(old), "\n"+name+":") {
				add.WriteString(l)
			}
		}
		if add.Len() == 0 {
			continue
		}
		if err := os.WriteFile(f.path, append(old, add.String()...), 0o644); err != nil {
			return err
		}
	}
	for _, d := range []struct {
		path string
		uid  int
	}{{"/root", 0}, {"/home/user", 1000}} {
		if err := os.MkdirAll(d.path, 0o755); err != nil {
			return err
		}
		if err := os.Chown(d.path, d.uid, d.uid); err != nil {
			return err
		}
	}
	return nil
}

// startHostileAgent (qvm.qrexec=hostile) plays a hostile VM: it offers
// dom0 the control channel again and again and answers each connection
// with a header claiming a message of almost 4 GiB, then garbage. dom0
// must stay unharmed and say the VM has no agent.
func startHostileAgent(ctx context.Context) error {
	if err := bootinit.LoadModules(agentModules); err != nil {
		return err
	}
	xs, err := xenstore.Dial(ctx)
	if err != nil {
		return err
	}
	go func() {
		garbage := make([]byte, 4096)
		for i := range garbage {
			garbage[i] = byte(i * 7)
		}
		hdr := []byte{0x00, 0x03, 0, 0, 0xf0, 0xff, 0xff, 0xff}
		for n := 1; ; n++ {
			conn, err := vchan.Server(ctx, xs, 0, 512, 12, 12)
			if err != nil {
				say("hostile agent: %v", err)
				time.Sleep(time.Second)
				continue
			}
			if err := conn.WaitConnected(ctx); err == nil {
				_, _ = conn.Write(append(hdr, garbage...))
				say("hostile agent: garbage sent on channel %d", n)
				time.Sleep(200 * time.Millisecond)
			}
			conn.Close()
		}
	}()
	return nil
}
