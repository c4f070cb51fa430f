package lifecycle

import (
	"context"
	"fmt"
	"io"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/qvm-project/qvm/internal/testio"
	"github.com/qvm-project/qvm/vmconsole"
)

// TestConsoleTTY reads the console's pseudo-terminal as a start does,
// against the real xenstored: it waits for xenconsoled to write it, and a
// console xenconsoled does not serve has none.
func TestConsoleTTY(t *testing.T) {
	m, _ := setup(t)
	ctx := context.Background()
	if tty, err := consoleTTY(ctx, m.XS, 7); tty != "" || err != nil {
		t.Errorf("no console: %q %v", tty, err)
	}
	m.XS.WriteString(ctx, "/local/domain/8/console/type", "ioemu")
	if tty, err := consoleTTY(ctx, m.XS, 8); tty != "" || err != nil {
		t.Errorf("an ioemu console: %q %v", tty, err)
	}
	m.XS.WriteString(ctx, "/local/domain/9/console/type", "xenconsoled")
	m.XS.WriteString(ctx, "/local/domain/9/console/tty", "")
	go func() {
		time.Sleep(200 * time.Millisecond)
		m.XS.WriteString(ctx, "/local/domain/9/console/tty", "/dev/pts/3")
	}()
	if tty, err := consoleTTY(ctx, m.XS, 9); tty != "/dev/pts/3" || err != nil {
		t.Errorf("console written later: %q %v", tty, err)
	}
	m.XS.WriteString(ctx, "/local/domain/10/console/type", "xenconsoled")
	m.XS.WriteString(ctx, "/local/domain/10/console/tty", strings.Repeat("/", 100))
	if tty, err := consoleTTY(ctx, m.XS, 10); err == nil {
		t.Errorf("a 100-byte name: %q, no error", tty)
	}
}

// TestMonitorServesConsole: the monitor of a VM handed a console keeps
// its log and relays it to qvm-console until the domain goes.
func TestMonitorServesConsole(t *testing.T) {
	ctx := context.Background()
	m, f := setup(t)
	master, tty := testio.PTY(t)
	id, w, done := startHandoff(t, m, f)
	fmt.Fprintf(w, "domid %d\nconsole %s\nrunning\n", id, tty)
	w.Close()

	sock := ConsoleSocketPath(m.Store, "direct")
	for {
		if _, err := os.Stat(sock); err == nil {
			break
		}
		time.Sleep(10 * time.Millisecond)
	}
	master.Write([]byte("guest says hi\r\n"))
	for {
		b, _ := vmconsole.ReadLog(ConsoleLogPath(m.Store, "direct"), vmconsole.LogLimit)
		if string(b) == "guest says hi\r\n" {
			break
		}
		time.Sleep(10 * time.Millisecond)
	}
	if err := vmconsole.Attach(ctx, sock, strings.NewReader("ls\r\x1d"), io.Discard, vmconsole.DefaultEscape); err != nil {
		t.Errorf("attach: %v", err)
	}
	got := make([]byte, 3)
	if _, err := io.ReadFull(master, got); err != nil || string(got) != "ls\r" {
		t.Errorf("the guest read %q %v", got, err)
	}
	f.RequestShutdown(ctx, id)
	f.Destroy(ctx, id)
	if err := <-done; err != nil {
		t.Fatalf("monitor: %v", err)
	}
	if _, err := os.Stat(sock); err == nil {
		t.Error("the console's socket outlived the monitor")
	}
}
