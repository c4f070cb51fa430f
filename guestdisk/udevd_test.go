package guestdisk_test

import (
	"bufio"
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/qvm-project/qvm/guestdisk"
	"github.com/qvm-project/qvm/internal/testenv"
	"github.com/qvm-project/qvm/loopdev"
)

const udevdPath = "/lib/systemd/systemd-udevd"

// Debian's rule files that act on loop devices' content or readiness, as
// installed (udev, lvm2). Others stay out of the test's udevd: they chown
// nodes and run programs for every device of this shared machine.
var debianRules = []string{"60-block.rules", "60-persistent-storage.rules", "64-btrfs.rules", "69-lvm.rules"}

// TestUdevDoesNotProbeGuestDisks runs a real systemd-udevd with qvm's
// rules and Debian's storage rules, and attaches an ext4 image with a
// chosen UUID and label the ways qvm and others do. A loop device of a VM
// image under the state directory, or of a disc qvm attached from anywhere,
// gets no /dev/disk link and no blkid properties, is hidden from udisks
// and systemd, is not watched, and udevd never reads it (strace of udevd
// and its workers: no read of the device, from the uevent of the
// attachment on); the same image attached by someone else from outside
// the state directory gets its by-uuid and by-label links and is read (so
// the test proves the rules, not a broken udevd or trace).
func TestUdevDoesNotProbeGuestDisks(t *testing.T) {
	testenv.RequireRoot(t)
	testenv.RequireFile(t, "/dev/loop-control")
	testenv.RequireFile(t, udevdPath)
	for _, f := range debianRules {
		testenv.RequireFile(t, filepath.Join("/usr/lib/udev/rules.d", f))
	}
	for _, c := range []string{"udevadm", "unshare", "nsenter", "setpriv", "strace", "mkfs.ext4", "losetup", "mount"} {
		testenv.LookPath(t, c)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()

	root := t.TempDir()
	t.Cleanup(func() { removeMarks(t, root) })
	state := filepath.Join(root, "state")
	elsewhere := filepath.Join(root, "home")
	image := filepath.Join(state, "appvms", "work", "private.img")
	uuid, label := randomUUID(t), "qvm"+randomHex(t, 4)
	mkdirs(t, filepath.Dir(image), elsewhere)
	run(t, ctx, "mkfs.ext4", "-q", "-F", "-U", uuid, "-L", label, image, "8M")
	copyOf := func(name string) string {
		p := filepath.Join(elsewhere, name)
		data, err := os.ReadFile(image)
		if err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(p, data, 0o644); err != nil {
			t.Fatal(err)
		}
		return p
	}
	// Discs: names udev rewrites when it substitutes them into the rule
	// (tab, brackets, '*', an invalid UTF-8 byte, a stray continuation,
	// trailing spaces), beside ones it keeps ("\x", UTF-8, '$', '%').
	discs := []string{
		copyOf("installer.iso"),
		copyOf("My Disc (1) é\t[x]*\\x41$%\xff,?.iso"),
		copyOf("broken \xc3\xe9 utf8 \xef\xbf\xbe.iso"),
		copyOf("trailing.iso  "),
	}
	plain := copyOf("dom0-own.img")

	u := startUdevd(t, ctx, root, state)

	// losetup is "someone else": it leaves no mark.
	losetup := func(t *testing.T, file string) (string, func()) {
		dev := strings.TrimSpace(run(t, ctx, "losetup", "--find", "--show", file))
		return dev, func() { run(t, ctx, "losetup", "--detach", dev) }
	}
	qvm := func(ro bool) func(t *testing.T, file string) (string, func()) {
		return func(t *testing.T, file string) (string, func()) {
			d, err := loopdev.Attach(ctx, file, ro)
			if err != nil {
				t.Fatal(err)
			}
			return d.Path, func() { d.Close() }
		}
	}

	// The control first: udevd and Debian's rules work here.
	t.Run("dom0's own image is probed", func(t *testing.T) {
		s := u.attach(t, ctx, plain, losetup)
		if s.props["ID_FS_UUID"] != uuid || s.props["ID_FS_LABEL"] != label || s.props["ID_FS_TYPE"] != "ext4" {
			t.Errorf("blkid properties of %s: %v", s.dev, s.props)
		}
		for _, l := range []string{"by-uuid/" + uuid, "by-label/" + label} {
			if !contains(s.links, l) {
				t.Errorf("no /dev/disk/%s link to %s (links: %v)", l, s.dev, s.links)
			}
		}
		if _, ok := s.props["QVM_GUEST_DISK"]; ok {
			t.Errorf("%s taken for a guest disk: %v", s.dev, s.props)
		}
		if !s.watched {
			t.Errorf("%s not watched", s.dev)
		}
		if s.reads == 0 {
			t.Errorf("the trace shows no read of %s: it would not show blkid's", s.dev)
		}
	})
	// Before qvm ever attached the image: the state directory alone.
	t.Run("a VM image attached by someone else is not probed", func(t *testing.T) {
		if _, err := os.Stat(markOf(t, image)); err == nil {
			t.Fatalf("%s is marked already; this case tests the state directory rule", image)
		}
		u.attach(t, ctx, image, losetup).ignored(t, uuid, label)
	})
	t.Run("a VM image qvm attaches is not probed", func(t *testing.T) {
		u.attach(t, ctx, image, qvm(false)).ignored(t, uuid, label)
		if _, err := os.Stat(markOf(t, image)); err != nil {
			t.Errorf("no mark: %v", err)
		}
	})
	t.Run("a disc qvm attaches from elsewhere is not probed", func(t *testing.T) {
		for _, d := range discs {
			u.attach(t, ctx, d, qvm(true)).ignored(t, uuid, label)
		}
	})
	// A file next to a marked disc is still dom0's.
	t.Run("dom0's own image is still probed", func(t *testing.T) {
		s := u.attach(t, ctx, plain, losetup)
		if s.props["ID_FS_UUID"] != uuid || !contains(s.links, "by-uuid/"+uuid) {
			t.Errorf("%s: properties %v, links %v", s.dev, s.props, s.links)
		}
	})
}

// udevd is a systemd-udevd of the test's own, in a mount namespace where
// /run/udev, /dev/{block,char,disk} are its own tmpfs and the rule
// directories hold only the test's rules. It sees every uevent of the
// machine, so the rules start with one that hands everything but the
// test's loop devices the flags that make Debian's rules skip them.
type udevd struct {
	cmd   *exec.Cmd
	ns    string // /proc/PID/root: the namespace's view of the file system
	trace string // strace of udevd and its workers: reads with the fds' paths
	log   string
}

// startUdevd starts the test's udevd with qvm's rules for state and a
// first rule that keeps it to loop devices of files under root.
func startUdevd(t *testing.T, ctx context.Context, root, state string) *udevd {
	t.Helper()
	dir := t.TempDir()
	rules := filepath.Join(dir, "rules")
	empty := filepath.Join(dir, "empty")
	mkdirs(t, rules, empty)
	if strings.ContainsAny(root, `*?[]|"\`) {
		t.Fatalf("test directory %q has characters a rule pattern treats specially", root)
	}
	scope := fmt.Sprintf(`# The test's udevd leaves the machine's other devices alone.
SUBSYSTEM!="block", GOTO="scope_end"
ATTRS{loop/backing_file}=="%s/*", GOTO="scope_end"
ENV{UDEV_DISABLE_PERSISTENT_STORAGE_RULES_FLAG}="1", ENV{DM_UDEV_DISABLE_OTHER_RULES_FLAG}="1", ENV{SYSTEMD_READY}="0", OPTIONS:="nowatch"
LABEL="scope_end"
`, root)
	qvmRules, err := guestdisk.UdevRules(state)
	if err != nil {
		t.Fatal(err)
	}
	writeFile(t, filepath.Join(rules, "00-qvm-test-scope.rules"), []byte(scope))
	writeFile(t, filepath.Join(rules, guestdisk.RulesFile), qvmRules)
	for _, f := range debianRules {
		data, err := os.ReadFile(filepath.Join("/usr/lib/udev/rules.d", f))
		if err != nil {
			t.Fatal(err)
		}
		writeFile(t, filepath.Join(rules, f), data)
	}

	// Mount points on the shared /dev and /run: made if missing, and
	// removed again once udevd has gone.
	var made []string
	t.Cleanup(func() {
		for i := len(made) - 1; i >= 0; i-- {
			os.Remove(made[i])
		}
	})
	for _, d := range []string{"/run/udev", "/dev/block", "/dev/char", "/dev/disk"} {
		if _, err := os.Lstat(d); errors.Is(err, fs.ErrNotExist) {
			if err := os.Mkdir(d, 0o755); err != nil {
				t.Fatal(err)
			}
			made = append(made, d)
		}
	}
	u := &udevd{trace: filepath.Join(dir, "trace"), log: filepath.Join(dir, "udevd.log")}
	script := `set -e
for d in /run/udev /dev/block /dev/char /dev/disk; do mount -t tmpfs -o mode=0755 qvm-test-udev "$d"; done
mount --bind "$RULES" /etc/udev/rules.d
for d in /lib/udev/rules.d /usr/lib/udev/rules.d /usr/local/lib/udev/rules.d; do
	if [ -d "$d" ]; then mount --bind "$EMPTY" "$d"; fi
done
exec strace -f -qq -y -o "$TRACE" -e trace=read,pread64,readv,preadv,preadv2 \
	setpriv --pdeathsig KILL ` + udevdPath + ` --debug --resolve-names=never
`
	logf, err := os.Create(u.log)
	if err != nil {
		t.Fatal(err)
	}
	defer logf.Close()
	u.cmd = exec.Command("unshare", "--mount", "--propagation", "private", "sh", "-c", script)
	u.cmd.Env = append(os.Environ(), "RULES="+rules, "EMPTY="+empty, "TRACE="+u.trace)
	u.cmd.Dir = "/"
	u.cmd.Stdout, u.cmd.Stderr = logf, logf
	u.cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
	if err := u.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	u.ns = fmt.Sprintf("/proc/%d/root", u.cmd.Process.Pid)
	t.Cleanup(func() { u.stop(t) })
	// Ready once it answers on its control socket. (udevd drops a control
	// message now and then here, "Invalid sender uid 65534": it arrived
	// before udevd asked for its sender's credentials. Hence the retries,
	// and no control messages but these.)
	for {
		if _, err := u.udevadm(ctx, "control", "--ping", "--timeout=5"); err == nil {
			break
		}
		if ctx.Err() != nil {
			t.Fatalf("udevd did not start: %v\n%s", ctx.Err(), tail(u.log))
		}
		time.Sleep(50 * time.Millisecond)
	}
	return u
}

// udevadm runs udevadm in udevd's mount namespace.
func (u *udevd) udevadm(ctx context.Context, args ...string) (string, error) {
	argv := append([]string{"-t", strconv.Itoa(u.cmd.Process.Pid), "-m", "udevadm"}, args...)
	out, err := exec.CommandContext(ctx, "nsenter", argv...).CombinedOutput()
	if err != nil {
		return string(out), fmt.Errorf("udevadm %s: %w: %s", strings.Join(args, " "), err, out)
	}
	return string(out), nil
}

// stop ends udevd, its workers and strace: SIGTERM to their process
// group; strace then exits and the kernel kills udevd, strace's child, with
// the parent death signal setpriv gave it.
func (u *udevd) stop(t *testing.T) {
	pgid := u.cmd.Process.Pid
	syscall.Kill(-pgid, syscall.SIGTERM)
	done := make(chan error, 1)
	go func() { done <- u.cmd.Wait() }()
	select {
	case <-done:
	case <-time.After(30 * time.Second):
		t.Errorf("strace did not exit; killing its process group")
		syscall.Kill(-pgid, syscall.SIGKILL)
		<-done
	}
	for deadline := time.Now().Add(30 * time.Second); syscall.Kill(-pgid, 0) == nil; {
		if time.Now().After(deadline) {
			t.Errorf("udevd outlives strace; killing its process group")
			syscall.Kill(-pgid, syscall.SIGKILL)
			deadline = time.Now().Add(30 * time.Second)
		}
		time.Sleep(10 * time.Millisecond)
	}
	if t.Failed() {
		t.Logf("udevd's log ends:\n%s", tail(u.log))
	}
}

// seen is what udevd made of one loop device.
type seen struct {
	dev     string
	props   map[string]string // udevadm info --query=property
	links   []string          // under /dev/disk, to the device
	watched bool              // inotify watch (60-block.rules)
	reads   int               // read calls of udevd's on the device
}

// attach attaches file with attachFn, waits until udevd has handled the
// uevent of that attachment, records what udevd made of it, and detaches
// it again (waiting for udevd to handle that too).
func (u *udevd) attach(t *testing.T, ctx context.Context, file string, attachFn func(*testing.T, string) (string, func())) seen {
	t.Helper()
	before := fileSize(t, u.trace)
	dev, detach := attachFn(t, file)
	detached := false
	defer func() {
		if !detached {
			detach()
		}
	}()
	u.sync(t, ctx, dev)
	s := seen{dev: dev, props: u.properties(t, ctx, dev)}
	name := filepath.Base(dev)
	filepath.WalkDir(filepath.Join(u.ns, "dev/disk"), func(p string, d fs.DirEntry, err error) error {
		if err == nil && d.Type()&fs.ModeSymlink != 0 {
			if target, err := os.Readlink(p); err == nil && filepath.Base(target) == name {
				rel, _ := filepath.Rel(filepath.Join(u.ns, "dev/disk"), p)
				s.links = append(s.links, rel)
			}
		}
		return nil
	})
	var st unix.Stat_t
	if err := unix.Stat(dev, &st); err != nil {
		t.Fatal(err)
	}
	watch := fmt.Sprintf("b%d:%d", unix.Major(st.Rdev), unix.Minor(st.Rdev))
	if _, err := os.Lstat(filepath.Join(u.ns, "run/udev/watch", watch)); err == nil {
		s.watched = true
	}
	s.reads = u.reads(t, before, dev)
	detach()
	detached = true
	for {
		if _, err := os.Stat(filepath.Join("/sys/block", name, "loop/backing_file")); errors.Is(err, fs.ErrNotExist) {
			break
		}
		if ctx.Err() != nil {
			t.Fatalf("%s stays attached: %v", dev, ctx.Err())
		}
		time.Sleep(10 * time.Millisecond)
	}
	u.sync(t, ctx, dev)
	return s
}

// ignored fails t unless udevd left the device alone as a guest disk.
func (s seen) ignored(t *testing.T, uuid, label string) {
	t.Helper()
	for k, want := range map[string]string{
		"QVM_GUEST_DISK": "1", "UDISKS_IGNORE": "1", "SYSTEMD_READY": "0",
		"DM_UDEV_DISABLE_OTHER_RULES_FLAG": "1", "UDEV_DISABLE_PERSISTENT_STORAGE_RULES_FLAG": "1",
	} {
		if s.props[k] != want {
			t.Errorf("%s: %s=%q, want %q", s.dev, k, s.props[k], want)
		}
	}
	for k, v := range s.props {
		if strings.HasPrefix(k, "ID_FS_") || strings.HasPrefix(k, "ID_PART_") || strings.HasPrefix(k, "LVM_") {
			t.Errorf("%s: udev recorded %s=%s from the guest's disk", s.dev, k, v)
		}
	}
	if len(s.links) > 0 {
		t.Errorf("%s: /dev/disk links %v (uuid %s, label %s)", s.dev, s.links, uuid, label)
	}
	if s.watched {
		t.Errorf("%s: udevd watches it (it would probe it again at each close after a write)", s.dev)
	}
	if s.reads > 0 {
		t.Errorf("%s: udevd read it %d times", s.dev, s.reads)
	}
}

// sync waits until udevd has handled every uevent of dev the kernel has
// sent so far: it has the kernel send one more, a change uevent with a
// UUID, and waits until udevd reports that one done (`udevadm trigger
// --settle`, which listens for udevd's report; no control message, see
// startUdevd). udevd handles a device's uevents in the order the kernel
// sent them, and reports one once the worker has also set up (or not)
// the inotify watch. The extra uevent sees the same device: the rules
// must hold for it too, and the trace counts both.
func (u *udevd) sync(t *testing.T, ctx context.Context, dev string) {
	t.Helper()
	if _, err := u.udevadm(ctx, "trigger", "--action=change", "--settle", dev); err != nil {
		t.Fatalf("%v\n%s", err, tail(u.log))
	}
}

func (u *udevd) properties(t *testing.T, ctx context.Context, dev string) map[string]string {
	t.Helper()
	out, err := u.udevadm(ctx, "info", "--query=property", "--name="+dev)
	props := map[string]string{}
	if err != nil {
		return props // not in the database yet
	}
	for _, l := range strings.Split(out, "\n") {
		if k, v, ok := strings.Cut(l, "="); ok {
			props[k] = v
		}
	}
	return props
}

// reads counts the read calls on dev in the trace since offset. strace
// writes each call when it returns, and the worker's reads return before
// it reports the event done.
func (u *udevd) reads(t *testing.T, offset int64, dev string) int {
	t.Helper()
	f, err := os.Open(u.trace)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if _, err := f.Seek(offset, io.SeekStart); err != nil {
		t.Fatal(err)
	}
	re := regexp.MustCompile(`^\d+ +(read|pread64|readv|preadv|preadv2)\(\d+<` + regexp.QuoteMeta(dev) + `>`)
	n := 0
	sc := bufio.NewScanner(f)
	sc.Buffer(make([]byte, 1<<16), 1<<20)
	for sc.Scan() {
		if re.MatchString(sc.Text()) {
			n++
		}
	}
	if err := sc.Err(); err != nil {
		t.Fatal(err)
	}
	return n
}

func run(t *testing.T, ctx context.Context, name string, args ...string) string {
	t.Helper()
	out, err := exec.CommandContext(ctx, name, args...).CombinedOutput()
	if err != nil {
		t.Fatalf("%s %s: %v\n%s", name, strings.Join(args, " "), err, out)
	}
	return string(out)
}

func mkdirs(t *testing.T, dirs ...string) {
	t.Helper()
	for _, d := range dirs {
		if err := os.MkdirAll(d, 0o755); err != nil {
			t.Fatal(err)
		}
	}
}

func writeFile(t *testing.T, p string, data []byte) {
	t.Helper()
	if err := os.WriteFile(p, data, 0o644); err != nil {
		t.Fatal(err)
	}
}

func fileSize(t *testing.T, p string) int64 {
	t.Helper()
	fi, err := os.Stat(p)
	if errors.Is(err, fs.ErrNotExist) {
		return 0
	}
	if err != nil {
		t.Fatal(err)
	}
	return fi.Size()
}

func contains(list []string, s string) bool {
	for _, l := range list {
		if l == s {
			return true
		}
	}
	return false
}

func tail(p string) string {
	data, _ := os.ReadFile(p)
	if len(data) > 8000 {
		data = data[len(data)-8000:]
	}
	return string(bytes.ToValidUTF8(data, []byte("?")))
}

func randomHex(t *testing.T, n int) string {
	b := make([]byte, n)
	if _, err := rand.Read(b); err != nil {
		t.Fatal(err)
	}
	return hex.EncodeToString(b)
}

func randomUUID(t *testing.T) string {
	h := randomHex(t, 16)
	return h[0:8] + "-" + h[8:12] + "-4" + h[13:16] + "-8" + h[17:20] + "-" + h[20:32]
}

// markOf is the mark of a file the test made (its path is the kernel's
// name for it: t.TempDir has no symbolic links).
func markOf(t *testing.T, file string) string {
	t.Helper()
	p, err := guestdisk.MarkPath(file)
	if err != nil {
		t.Fatal(err)
	}
	return p
}

// removeMarks removes the marks of the test's files: those under the
// directory of root, a t.TempDir.
func removeMarks(t *testing.T, root string) {
	if err := os.RemoveAll(markOf(t, filepath.Dir(root))); err != nil {
		t.Log(err)
	}
}
