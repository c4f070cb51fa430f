package main

import (
	"bufio"
	"context"
	"encoding/json"
	"log/slog"
	"net"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/qvm-project/qvm/vmconsole"
)

// libxlArgs is what libxl 4.17 passes the device model of stubdomain 7
// (from a real run, xl -vvv create).
var libxlArgs = []string{"-xen-domid", "7", "-chardev", "socket,id=libxl-cmd,path=/var/run/xen/qmp-libxl-7,server=on,wait=off",
	"-mon", "chardev=libxl-cmd,mode=control", "-chardev", "socket,id=libxenstat-cmd,path=/var/run/xen/qmp-libxenstat-7,server=on,wait=off",
	"-mon", "chardev=libxenstat-cmd,mode=control", "-nodefaults", "-no-user-config", "-xen-attach", "-name", "inst-dm",
	"-vnc", "none", "-display", "none", "-nographic", "-machine", "xenpv", "-m", "129"}

func TestParseArgs(t *testing.T) {
	inv, err := parseArgs(libxlArgs)
	if err != nil {
		t.Fatal(err)
	}
	if inv.Domid != 7 || inv.QMPPath != "/var/run/xen/qmp-libxl-7" || inv.QMPFD != -1 || inv.Name != "inst-dm" {
		t.Errorf("parseArgs = %+v", inv)
	}
	inv, err = parseArgs([]string{"-xen-domid", "9", "-chardev", "socket,id=libxl-cmd,fd=5,server=on,wait=off"})
	if err != nil || inv.QMPFD != 5 || inv.QMPPath != "" {
		t.Errorf("fd form: %+v %v", inv, err)
	}
	// qvm's discs come last, as libxl appends extra_pv.
	disc := "xvdd:3:7:0:/dev/loop0:/home/user/installcd.iso"
	inv, err = parseArgs(append(append([]string(nil), libxlArgs...), discFlag, disc))
	if err != nil || len(inv.Discs) != 1 || inv.Discs[0].String() != disc || inv.Discs[0].Backend != 3 {
		t.Errorf("with %s %s: %+v %v", discFlag, disc, inv, err)
	}
	inv, err = parseArgs(append(append([]string(nil), libxlArgs...), vmconsole.DMFlag, "/var/lib/qvm/log/inst.console.log", "/var/lib/qvm/run/inst.console"))
	if err != nil || inv.ConsoleLog != "/var/lib/qvm/log/inst.console.log" || inv.ConsoleSocket != "/var/lib/qvm/run/inst.console" {
		t.Errorf("with %s: %+v %v", vmconsole.DMFlag, inv, err)
	}
	for _, bad := range [][]string{
		append(append([]string(nil), libxlArgs...), vmconsole.DMFlag, "/var/lib/qvm/log/x.log"),
		append(append([]string(nil), libxlArgs...), vmconsole.DMFlag, "log/x.log", "/run/x"),
		append(append([]string(nil), libxlArgs...), vmconsole.DMFlag, "/var/lib/qvm/../x.log", "/run/x"),
		append(append([]string(nil), libxlArgs...), discFlag),
		append(append([]string(nil), libxlArgs...), discFlag, "xvdd:3:7:0:/dev/sda:/x"),
		nil,
		{"-xen-domid"},
		{"-xen-domid", "0", "-chardev", "socket,id=libxl-cmd,path=/x"},
		{"-xen-domid", "32752", "-chardev", "socket,id=libxl-cmd,path=/x"},
		{"-xen-domid", "x", "-chardev", "socket,id=libxl-cmd,path=/x"},
		{"-xen-domid", "3"},
		{"-xen-domid", "3", "-chardev", "socket,id=libxl-cmd,path=rel"},
		{"-xen-domid", "3", "-chardev", "socket,id=libxl-cmd,fd=1"},
	} {
		if inv, err := parseArgs(bad); err == nil {
			t.Errorf("parseArgs(%q) = %+v, want an error", bad, inv)
		}
	}
}

// startQMP serves QMP on a new unix socket until the test ends, and
// returns the socket's path.
func startQMP(t *testing.T, quit func()) string {
	t.Helper()
	l, err := net.Listen("unix", filepath.Join(t.TempDir(), "qmp"))
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	t.Cleanup(cancel)
	go serveQMP(ctx, slog.New(slog.DiscardHandler), l, quit)
	return l.Addr().String()
}

// TestQMPDialogue holds libxl's dialogue with the device model over a
// real unix socket: greeting, qmp_capabilities, query-chardev, an
// unknown command, quit.
func TestQMPDialogue(t *testing.T) {
	quit := make(chan struct{})
	addr := startQMP(t, func() { close(quit) })
	c, err := net.Dial("unix", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(10 * time.Second))
	r := bufio.NewReader(c)
	line := func() map[string]any {
		t.Helper()
		s, err := r.ReadString('\n')
		if err != nil || !strings.HasSuffix(s, "\r\n") {
			t.Fatalf("reply %q: %v (QMP lines end in CRLF)", s, err)
		}
		var m map[string]any
		if err := json.Unmarshal([]byte(s), &m); err != nil {
			t.Fatalf("reply %q: %v", s, err)
		}
		return m
	}
	g := line()
	v := g["QMP"].(map[string]any)["version"].(map[string]any)["qemu"].(map[string]any)
	if v["major"] != float64(7) {
		t.Errorf("greeting %v", g)
	}
	for _, x := range []struct{ cmd, want string }{
		{`{"execute":"qmp_capabilities","id":1}`, `{"id":1,"return":{}}`},
		{`{ "execute": "query-chardev", "id": 2 }`, `{"id":2,"return":[]}`},
		{`{"execute":"query-status","id":3}`, `{"id":3,"return":{"running":true,"singlestep":false,"status":"running"}}`},
		{`{"execute":"device_add","id":4}`, `{"error":{"class":"CommandNotFound","desc":"The command \"device_add\" has not been found"},"id":4}`},
		{`{"execute":"quit","id":5}`, `{"id":5,"return":{}}`},
	} {
		if _, err := c.Write([]byte(x.cmd + "\r\n")); err != nil {
			t.Fatal(err)
		}
		got, _ := json.Marshal(line())
		if string(got) != x.want {
			t.Errorf("%s: got %s, want %s", x.cmd, got, x.want)
		}
	}
	select {
	case <-quit:
	case <-time.After(10 * time.Second):
		t.Fatal("quit did not stop the server")
	}
}

// TestQMPBadInput: garbage gets QEMU's parse error and the connection
// ends; the server goes on serving others.
func TestQMPBadInput(t *testing.T) {
	addr := startQMP(t, func() {})
	for range 2 {
		c, err := net.Dial("unix", addr)
		if err != nil {
			t.Fatal(err)
		}
		c.SetDeadline(time.Now().Add(10 * time.Second))
		r := bufio.NewReader(c)
		r.ReadString('\n')
		c.Write([]byte("}}}not json\r\n"))
		s, _ := r.ReadString('\n')
		if !strings.Contains(s, `"GenericError"`) {
			t.Errorf("reply to garbage: %q", s)
		}
		if _, err := r.ReadString('\n'); err == nil {
			t.Error("connection still open after garbage")
		}
		c.Close()
	}
}

func TestLogFileOf(t *testing.T) {
	if p, err := logFileOf("file:/var/log/xen/qemu-dm-inst.log"); err != nil || p != "/var/log/xen/qemu-dm-inst.log" {
		t.Errorf("libxl's log: %q %v", p, err)
	}
	for _, bad := range []string{"", "pty", "file:", "file:/var/log/xen", "file:/var/log/xen/../../etc/shadow", "file:/var/log/xen/a/b.log",
		"file:/etc/passwd", "pipe:/var/log/xen/x", "file:var/log/xen/x.log", "file:/var/log/xen//x.log"} {
		if p, err := logFileOf(bad); err == nil {
			t.Errorf("logFileOf(%q) = %q, want an error", bad, p)
		}
	}
}
