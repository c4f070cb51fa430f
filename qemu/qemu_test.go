package qemu

import (
	"context"
	"encoding/json"
	"errors"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/qvm-project/qvm/e2e/xenvm"
	"github.com/qvm-project/qvm/internal/testenv"
	"github.com/qvm-project/qvm/qemu/qmp"
	"github.com/qvm-project/qvm/stubdom/testiso"
)

// cdID is the CD-ROM drive's id, named the way libxl names it.
const cdID = "ide-5632"

// startQEMU runs qemu-system-x86_64 (TCG, no NIC) with a CD-ROM drive
// holding iso and a QMP socket, and returns the socket and the serial log.
// QEMU is killed when the test ends.
func startQEMU(t *testing.T, iso string, boot bool) (sock, serial string) {
	t.Helper()
	testenv.LookPath(t, "qemu-system-x86_64")
	dir := t.TempDir()
	sock = filepath.Join(dir, "qmp.sock")
	serial = filepath.Join(dir, "serial.log")
	args := []string{"-m", "256", "-nographic", "-no-reboot", "-nic", "none", "-nodefaults",
		"-chardev", "socket,id=qmp,path=" + sock + ",server=on,wait=off", "-mon", "chardev=qmp,mode=control",
		"-drive", "if=none,readonly=on,id=" + cdID + ",file=" + iso + ",format=raw",
		"-device", "ide-cd,id=" + cdID + ",drive=" + cdID + ",bus=ide.1,unit=0",
		"-serial", "file:" + serial, "-display", "none"}
	if !boot {
		args = append(args, "-S")
	} else {
		args = append(args, "-boot", "d")
	}
	cmd := exec.Command("qemu-system-x86_64", args...)
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	out := &strings.Builder{}
	cmd.Stdout, cmd.Stderr = out, out
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	exited := make(chan struct{})
	go func() { cmd.Wait(); close(exited) }()
	t.Cleanup(func() {
		cmd.Process.Kill()
		<-exited
	})
	// QEMU creates the socket before it listens on it: wait until it
	// takes a connection (it accepts the next one once this one closes).
	deadline := time.Now().Add(30 * time.Second)
	for {
		if c, err := net.Dial("unix", sock); err == nil {
			c.Close()
			return sock, serial
		}
		select {
		case <-exited:
			t.Fatalf("qemu exited: %s", out)
		default:
		}
		if time.Now().After(deadline) {
			t.Fatalf("QMP socket takes no connection after 30 s: %s", out)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// isos builds two guest ISOs, labelled QVMBOOT and PowerOffLabel, for a
// machine without Xen.
func isos(t *testing.T) (boot, off string) {
	t.Helper()
	p, err := xenvm.DefaultParts()
	if err != nil {
		testenv.Missing(t, "%v", err)
	}
	s, err := testiso.FromDom0Dir(filepath.Dir(p.Kernel))
	if err != nil {
		testenv.Missing(t, "%v", err)
	}
	testenv.LookPath(t, "xorriso")
	for _, f := range []string{testiso.IsolinuxBin, testiso.LdlinuxC32, testiso.Busybox} {
		testenv.RequireFile(t, f)
	}
	s.WorkDir = t.TempDir()
	s.Cmdline = testiso.BareCmdline
	var out []string
	for _, l := range []string{"QVMBOOT", testiso.PowerOffLabel} {
		s.Label, s.Out = l, filepath.Join(s.WorkDir, l+".iso")
		if err := testiso.Build(context.Background(), s); err != nil {
			t.Fatal(err)
		}
		out = append(out, s.Out)
	}
	return out[0], out[1]
}

func dial(t *testing.T, sock string) *Monitor {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	m, err := Dial(ctx, sock)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { m.Close() })
	return m
}

// TestDrivesEjectChange drives a real QEMU: the CD-ROM is listed with its
// medium, ejected (tray open, no medium) and loaded with another image.
func TestDrivesEjectChange(t *testing.T) {
	dir := t.TempDir()
	a, b := filepath.Join(dir, "a.img"), filepath.Join(dir, "b.img")
	for _, f := range []string{a, b} {
		if err := os.WriteFile(f, make([]byte, 1<<20), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	sock, _ := startQEMU(t, a, false)
	m := dial(t, sock)
	ctx := context.Background()
	d, err := m.Drive(ctx, cdID)
	if err != nil {
		t.Fatal(err)
	}
	if d.Medium == nil || d.Medium.File != a || !d.Medium.ReadOnly || d.TrayOpen {
		t.Fatalf("drive at start: %+v (medium %+v), want %s read-only, tray closed", d, d.Medium, a)
	}
	if err := m.Eject(ctx, cdID); err != nil {
		t.Fatal(err)
	}
	if d, err = m.Drive(ctx, cdID); err != nil || d.Medium != nil || !d.TrayOpen {
		t.Fatalf("after eject: %+v, %v: want an open, empty tray", d, err)
	}
	if err := m.ChangeMedium(ctx, cdID, b); err != nil {
		t.Fatal(err)
	}
	if d, err = m.Drive(ctx, cdID); err != nil || d.Medium == nil || d.Medium.File != b || !d.Medium.ReadOnly || d.TrayOpen {
		t.Fatalf("after change: %+v, %v: want %s read-only, tray closed", d, err, b)
	}
	if err := m.ChangeMedium(ctx, cdID, filepath.Join(dir, "missing.iso")); err == nil {
		t.Fatal("changing to a missing file succeeded")
	}
	if _, err := m.Drive(ctx, "ide-9"); !errors.Is(err, ErrNoDrive) {
		t.Fatalf("unknown drive: %v, want ErrNoDrive", err)
	}
	if err := m.Eject(ctx, "ide-9"); err == nil {
		t.Fatal("eject of an unknown drive succeeded")
	}
}

// TestQMPWithQEMU: the QMP client against a real QEMU: its greeting, the
// event an eject sends, an error reply that leaves the connection usable.
func TestQMPWithQEMU(t *testing.T) {
	img := filepath.Join(t.TempDir(), "a.img")
	if err := os.WriteFile(img, make([]byte, 1<<20), 0o644); err != nil {
		t.Fatal(err)
	}
	sock, _ := startQEMU(t, img, false)
	m := dial(t, sock)
	q := m.Conn()
	if g := q.Greeting(); g.Major < 2 || !strings.Contains(g.Package, "Debian") {
		t.Errorf("greeting %+v", g)
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	err := m.Eject(ctx, "no-such-drive")
	var qe *qmp.Error
	if !errors.As(err, &qe) || qe.Class != "DeviceNotFound" || !strings.Contains(qe.Desc, "no-such-drive") {
		t.Fatalf("eject of an unknown drive: %v, want QEMU's DeviceNotFound", err)
	}
	if err := m.Eject(ctx, cdID); err != nil {
		t.Fatal(err)
	}
	for {
		e, err := q.NextEvent(ctx)
		if err != nil {
			t.Fatal(err)
		}
		var data struct {
			ID       string `json:"id"`
			TrayOpen bool   `json:"tray-open"`
		}
		if e.Name != "DEVICE_TRAY_MOVED" {
			continue
		}
		if err := json.Unmarshal(e.Data, &data); err != nil || data.ID != cdID || !data.TrayOpen || e.Time.IsZero() {
			t.Fatalf("tray event %+v (%s), %v", e, e.Data, err)
		}
		break
	}
	var status struct{ Status string }
	if err := q.Execute(ctx, "query-status", nil, &status); err != nil || status.Status != "prelaunch" {
		t.Fatalf("query-status: %+v, %v", status, err)
	}
}

// TestDialBusy: QEMU serves one QMP client at a time; a second Dial gives
// up when its context ends instead of hanging.
func TestDialBusy(t *testing.T) {
	img := filepath.Join(t.TempDir(), "a.img")
	os.WriteFile(img, make([]byte, 1<<20), 0o644)
	sock, _ := startQEMU(t, img, false)
	dial(t, sock)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	if m, err := Dial(ctx, sock); err == nil {
		m.Close()
		t.Fatal("a second client got the monitor while the first held it")
	} else if !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("second Dial: %v, want a deadline error", err)
	}
}

// TestGuestSeesMediaChange boots the test guest from a disc in plain QEMU:
// it reports its disc's label; after an eject it reports an empty drive;
// after the other disc goes in it reports that label and powers off.
func TestGuestSeesMediaChange(t *testing.T) {
	boot, off := isos(t)
	sock, serial := startQEMU(t, boot, true)
	m := dial(t, sock)
	ctx := context.Background()
	waitLine(t, serial, "cdrom QVMBOOT")
	if err := m.Eject(ctx, cdID); err != nil {
		t.Fatal(err)
	}
	waitLine(t, serial, "cdrom empty")
	if err := m.ChangeMedium(ctx, cdID, off); err != nil {
		t.Fatal(err)
	}
	waitLine(t, serial, "cdrom "+testiso.PowerOffLabel)
	waitLine(t, serial, "poweroff")
}

// waitLine waits for a guest line on the serial log.
func waitLine(t *testing.T, serial, want string) {
	t.Helper()
	deadline := time.Now().Add(4 * time.Minute)
	for time.Now().Before(deadline) {
		if hasGuestLine(serial, want) {
			return
		}
		time.Sleep(200 * time.Millisecond)
	}
	b, _ := os.ReadFile(serial)
	t.Fatalf("guest never said %q; serial:\n%s", want, b)
}

func hasGuestLine(path, want string) bool {
	b, err := os.ReadFile(path)
	return err == nil && slices.Contains(testiso.Lines(string(b), ""), want)
}

func TestSocketPath(t *testing.T) {
	if got := SocketPath(7); got != "/var/run/xen/qmp-libxl-7" {
		t.Fatal(got)
	}
	for in, want := range map[string]string{"ide-5632": "ide-5632", "/machine/peripheral/ide-5632/virtio-backend": "ide-5632"} {
		if got := qdevID(in); got != want {
			t.Errorf("qdevID(%q) = %q, want %q", in, got, want)
		}
	}
}

// TestGuestSeesKeys: keys sent with SendKey reach the guest's keyboard;
// it reports the line they typed.
func TestGuestSeesKeys(t *testing.T) {
	boot, _ := isos(t)
	sock, serial := startQEMU(t, boot, true)
	m := dial(t, sock)
	ctx := context.Background()
	waitLine(t, serial, "cdrom QVMBOOT")
	for _, combo := range []string{"h", "shift-i", "spc", "1", "ret"} {
		keys, err := ParseCombo(combo)
		if err != nil {
			t.Fatal(err)
		}
		if err := m.SendKey(ctx, keys, 0); err != nil {
			t.Fatalf("send-key %s: %v", combo, err)
		}
	}
	waitLine(t, serial, "key hI 1")
}

func TestParseCombo(t *testing.T) {
	for combo, want := range map[string]string{
		"ctrl-alt-del": "ctrl alt delete", "Ctrl-Alt-Delete": "ctrl alt delete", "ret": "ret",
		"shift-a": "shift a", "f12": "f12", "space": "spc", "kp_enter": "kp_enter",
	} {
		got, err := ParseCombo(combo)
		if err != nil || strings.Join(got, " ") != want {
			t.Errorf("ParseCombo(%q) = %q, %v; want %q", combo, got, err, want)
		}
	}
	for _, bad := range []string{"", "ctrl-", "-", "nokey", "ctrl-alt-dle", "unmapped", "a-b-c-d-e-f-g-h-i", "a\x00"} {
		if got, err := ParseCombo(bad); err == nil {
			t.Errorf("ParseCombo(%q) = %q, want an error", bad, got)
		}
	}
}
