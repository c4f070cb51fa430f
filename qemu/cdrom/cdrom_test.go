package cdrom

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/qvm-project/qvm/blkback"
	"github.com/qvm-project/qvm/internal/testenv"
	"github.com/qvm-project/qvm/xenstore/xenstoretest"
)

func TestParamsPath(t *testing.T) {
	for in, want := range map[string]string{
		"raw:/var/lib/iso/a.iso": "/var/lib/iso/a.iso",
		"aio:/x":                 "/x",
		"/dev/loop3":             "/dev/loop3",
		"/tmp/a:b.iso":           "/tmp/a:b.iso",
		"raw:/tmp/a:b.iso":       "/tmp/a:b.iso",
	} {
		if got := ParamsPath(in); got != want {
			t.Errorf("ParamsPath(%q) = %q, want %q", in, got, want)
		}
	}
}

// TestXenstoreDisks adds a disc to "stubdomain" 6 through a real C
// xenstored and a real loop device, with the frontend and backend played
// by the test: the entries are what blkback and blkfront read, only the
// domain can read its backend, libxl's record lets it clean up, and the
// removal waits for the backend and leaves nothing.
func TestXenstoreDisks(t *testing.T) {
	testenv.RequireRoot(t)
	testenv.RequireFile(t, "/dev/loop-control")
	d := xenstoretest.Start(t)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	dom0 := d.Client()
	stub := d.Guest(6)
	img := filepath.Join(t.TempDir(), "disc.iso")
	if err := os.WriteFile(img, make([]byte, 1<<20), 0o644); err != nil {
		t.Fatal(err)
	}
	fe, be, lp := vbdPaths(6, blkback.VdevNumber("xvde"))

	// The backend opens the loop device (as blkback does, which keeps
	// the autoclear device alive), then the stubdomain's frontend
	// connects.
	held := make(chan *os.File, 1)
	go func() {
		defer close(held)
		for ctx.Err() == nil {
			if s, err := stub.ReadString(ctx, fe+"/state"); err == nil && s == stateInitialising {
				dev, err := dom0.ReadString(ctx, be+"/params")
				if err != nil {
					t.Errorf("backend params: %v", err)
					return
				}
				f, err := os.Open(dev)
				if err != nil {
					t.Errorf("open %s as the backend: %v", dev, err)
					return
				}
				held <- f
				stub.WriteString(ctx, fe+"/state", stateConnected)
				return
			}
			time.Sleep(20 * time.Millisecond)
		}
	}()
	x := XenstoreDisks{XS: dom0}
	if err := x.Attach(ctx, 6, "xvde", img); err != nil {
		t.Fatal(err)
	}
	params, err := dom0.ReadString(ctx, be+"/params")
	if err != nil || !strings.HasPrefix(params, "/dev/loop") {
		t.Fatalf("backend params %q, %v", params, err)
	}
	var st unix.Stat_t
	if err := unix.Stat(params, &st); err != nil {
		t.Fatal(err)
	}
	for k, want := range map[string]string{
		be + "/physical-device": fmt.Sprintf("%x:%x", unix.Major(st.Rdev), unix.Minor(st.Rdev)),
		be + "/mode":            "r", be + "/frontend": fe, be + "/frontend-id": "6", be + "/dev": "xvde",
		fe + "/backend": be, fe + "/virtual-device": "51776", lp + "/backend": be, lp + "/frontend": fe,
	} {
		if got, err := dom0.ReadString(ctx, k); err != nil || got != want {
			t.Errorf("%s = %q, %v; want %q", k, got, err, want)
		}
	}
	if got := imageOf(params); got != img {
		t.Errorf("the loop device serves %q, want %s", got, img)
	}
	// The stubdomain reads its backend but cannot change it.
	if _, err := stub.ReadString(ctx, be+"/params"); err != nil {
		t.Errorf("the stubdomain cannot read its backend: %v", err)
	}
	if err := stub.WriteString(ctx, be+"/params", "/etc/shadow"); !errors.Is(err, syscall.EACCES) {
		t.Errorf("the stubdomain wrote its backend's params: %v", err)
	}
	if err := x.Attach(ctx, 6, "xvde", img); err == nil || !strings.Contains(err.Error(), "already has a block device xvde") {
		t.Errorf("a second disc at the same name: %v", err)
	}

	// The backend: closes when asked.
	go func() {
		for ctx.Err() == nil {
			if s, err := dom0.ReadString(ctx, be+"/state"); err == nil && s == stateClosing {
				dom0.WriteString(ctx, be+"/state", stateClosed)
				return
			}
			time.Sleep(20 * time.Millisecond)
		}
	}()
	if err := x.Detach(ctx, 6, "xvde"); err != nil {
		t.Fatal(err)
	}
	for _, p := range []string{fe, be, lp} {
		if _, err := dom0.Read(ctx, p); !errors.Is(err, syscall.ENOENT) {
			t.Errorf("%s is still there: %v", p, err)
		}
	}
	// Nobody holds the loop device once the backend lets go: the kernel
	// detaches it.
	if f := <-held; f != nil {
		f.Close()
	}
	if err := waitUntil(10*time.Second, func() bool { return imageOf(params) != img }); err != nil {
		t.Errorf("loop device %s still serves %s", params, img)
	}
	if err := x.Detach(ctx, 6, "xvde"); err != nil {
		t.Errorf("detaching a gone device: %v", err)
	}
}

// TestXenstoreDisksNoFrontend: when the domain never connects, Attach
// fails after its wait and leaves no entries.
func TestXenstoreDisksNoFrontend(t *testing.T) {
	if testing.Short() {
		t.Skip("waits 30 s")
	}
	testenv.RequireRoot(t)
	testenv.RequireFile(t, "/dev/loop-control")
	d := xenstoretest.Start(t)
	ctx := context.Background()
	img := filepath.Join(t.TempDir(), "disc.iso")
	os.WriteFile(img, make([]byte, 1<<20), 0o644)
	x := XenstoreDisks{XS: d.Client()}
	err := x.Attach(ctx, 9, "xvdf", img)
	if err == nil || !strings.Contains(err.Error(), "did not connect") {
		t.Fatalf("got %v", err)
	}
	fe, be, lp := vbdPaths(9, blkback.VdevNumber("xvdf"))
	for _, p := range []string{fe, be, lp} {
		if _, err := d.Client().Read(ctx, p); !errors.Is(err, syscall.ENOENT) {
			t.Errorf("%s left behind: %v", p, err)
		}
	}
}

func waitUntil(limit time.Duration, ok func() bool) error {
	deadline := time.Now().Add(limit)
	for !ok() {
		if time.Now().After(deadline) {
			return errors.New("timeout")
		}
		time.Sleep(50 * time.Millisecond)
	}
	return nil
}
