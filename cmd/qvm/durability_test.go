package main

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"math/rand"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// TestParallelCreates runs 100 qvm-create at once: all succeed, and no
// name, qid or IP repeats; racing creates of one name: exactly one wins.
func TestParallelCreates(t *testing.T) {
	e := newEnv(t)
	const n = 100
	var wg sync.WaitGroup
	codes := make([]int, n)
	for i := 0; i < n; i++ {
		wg.Add(1)
		go func(i int) {
			defer wg.Done()
			codes[i] = e.exec("qvm-create", "--class", "StandaloneVM", "-l", "red", fmt.Sprintf("vm%03d", i)).code
		}(i)
	}
	wg.Wait()
	for i, c := range codes {
		if c != 0 {
			t.Errorf("create vm%03d: exit %d", i, c)
		}
	}
	var list []struct {
		Name       string
		Properties map[string]any
	}
	if err := json.Unmarshal([]byte(e.ok("qvm-ls", "--format", "json")), &list); err != nil {
		t.Fatal(err)
	}
	if len(list) != n+1 {
		t.Fatalf("%d VMs listed, want %d", len(list), n+1)
	}
	seen := map[string]string{}
	for _, v := range list {
		for _, key := range []string{"qid", "ip", "mac", "uuid"} {
			val := fmt.Sprint(v.Properties[key])
			if v.Name == "dom0" && key != "qid" && key != "uuid" {
				continue
			}
			if other, dup := seen[key+"="+val]; dup {
				t.Errorf("%s and %s share %s %s", other, v.Name, key, val)
			}
			seen[key+"="+val] = v.Name
		}
	}

	// Ten racing creates of the same name: one wins, nine are refused.
	wins := 0
	var mu sync.Mutex
	for i := 0; i < 10; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if e.exec("qvm-create", "--class", "StandaloneVM", "-l", "blue", "contested").code == 0 {
				mu.Lock()
				wins++
				mu.Unlock()
			}
		}()
	}
	wg.Wait()
	if wins != 1 {
		t.Errorf("%d creates of one name succeeded, want 1", wins)
	}
}

// TestReadersDoNotWaitForWriters holds the writer lock and lists VMs.
func TestReadersDoNotWaitForWriters(t *testing.T) {
	e := seedSetup(t)
	f, err := os.OpenFile(filepath.Join(e.dir, "qvm.lock"), os.O_RDWR, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if err := unix.Flock(int(f.Fd()), unix.LOCK_EX); err != nil {
		t.Fatal(err)
	}
	// A hang guard, not a timing check: qvm-ls must finish while the lock is held.
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, filepath.Join(e.bin, "qvm-ls"), "-n")
	cmd.Env = append(os.Environ(), "QVM_DIR="+e.dir)
	out, err := cmd.Output()
	if err != nil || !strings.Contains(string(out), "my-new-vm") {
		t.Fatalf("qvm-ls under a held writer lock: %v\n%s", err, out)
	}
	// A writer does wait; it proceeds once the lock is released.
	w := exec.Command(filepath.Join(e.bin, "qvm-prefs"), "my-new-vm", "memory", "1234")
	w.Env = cmd.Env
	if err := w.Start(); err != nil {
		t.Fatal(err)
	}
	unix.Flock(int(f.Fd()), unix.LOCK_UN)
	if err := w.Wait(); err != nil {
		t.Fatalf("writer after unlock: %v", err)
	}
	if got := e.ok("qvm-prefs", "my-new-vm", "memory"); got != "1234\n" {
		t.Errorf("memory = %q", got)
	}
}

// TestCrashDuringMutations kills writers with SIGKILL at random points over
// more than 1,000 mutations: property changes, creates, creates that move a
// user's image in (--root-move-from), clones and removes. After each kill
// the store must load; in the end it must hold every mutation that
// reported success, and no user's image may be lost: a moved image is
// either the VM's root (its user name gone) or still the user's file.
func TestCrashDuringMutations(t *testing.T) {
	e := newEnv(t)
	const workers = 4
	const perWorker = 260 // 1,040 mutations
	for w := 0; w < workers; w++ {
		e.ok("qvm-create", "--class", "StandaloneVM", "-l", "red", fmt.Sprintf("w%d", w))
	}
	userDir := t.TempDir() // the same filesystem: moves link
	type move struct {
		vm, image string
		killed    bool
	}
	type outcome struct {
		lastOK  int      // last memory value reported set
		maybe   []int    // killed attempts after it (may have landed)
		created []string // creates and clones reported done
		removed []string // removes reported done
		moves   []move
		kills   int
	}
	results := make([]outcome, workers)
	var wg sync.WaitGroup
	for w := 0; w < workers; w++ {
		wg.Add(1)
		go func(w int) {
			defer wg.Done()
			rng := rand.New(rand.NewSource(int64(w) + time.Now().UnixNano()))
			res := &results[w]
			res.lastOK = -1
			var mine []string // VMs this worker made that may exist
			for i := 0; i < perWorker; i++ {
				var argv []string
				mem := 500 + w*1000 + i
				name := fmt.Sprintf("c%d-%d", w, i)
				op := "prefs"
				switch i % 8 {
				case 0:
					op, argv = "create", []string{"create", "--class", "StandaloneVM", "-l", "green", name}
				case 2:
					img := filepath.Join(userDir, name+".img")
					if err := os.WriteFile(img, []byte(strings.Repeat("u", 1<<16)), 0o644); err != nil {
						t.Error(err)
						return
					}
					op, argv = "move", []string{"create", "--class", "StandaloneVM", "-l", "green", "--root-move-from", img, name}
				case 4:
					op, argv = "clone", []string{"clone", fmt.Sprintf("w%d", w), name}
				case 6:
					if len(mine) > 0 {
						op, argv = "remove", []string{"remove", "-f", mine[0]}
						break
					}
					fallthrough
				default:
					argv = []string{"prefs", fmt.Sprintf("w%d", w), "memory", strconv.Itoa(mem)}
				}
				cmd := exec.Command(qvmBin, argv...)
				cmd.Env = append(os.Environ(), "QVM_DIR="+e.dir)
				var stderr bytes.Buffer
				cmd.Stderr = &stderr
				if err := cmd.Start(); err != nil {
					t.Error(err)
					return
				}
				kill := rng.Intn(3) == 0
				if kill {
					time.Sleep(time.Duration(rng.Intn(4000)) * time.Microsecond)
					cmd.Process.Signal(syscall.SIGKILL)
				}
				err := cmd.Wait()
				killed := false
				if ee, ok := err.(*exec.ExitError); ok {
					if ws, ok := ee.Sys().(syscall.WaitStatus); ok && ws.Signaled() {
						killed = true
						res.kills++
					} else if op == "remove" && strings.Contains(stderr.String(), "no such domain") {
						// A remove after a killed create that never landed,
						// or after a killed remove that did: it is gone.
						res.removed = append(res.removed, mine[0])
						mine = mine[1:]
						continue
					} else {
						t.Errorf("%v failed: %v %s", argv, err, stderr.String())
						return
					}
				}
				switch op {
				case "create", "clone":
					if !killed {
						res.created = append(res.created, name)
					}
					mine = append(mine, name)
				case "move":
					res.moves = append(res.moves, move{vm: name, image: argv[len(argv)-2], killed: killed})
					if !killed {
						res.created = append(res.created, name)
					}
				case "remove":
					if !killed {
						res.removed = append(res.removed, mine[0])
						mine = mine[1:]
					}
				default:
					if !killed {
						res.lastOK, res.maybe = mem, nil
					} else {
						res.maybe = append(res.maybe, mem)
					}
				}
			}
		}(w)
	}
	wg.Wait()
	if t.Failed() {
		return
	}
	total := 0
	for _, r := range results {
		total += r.kills
	}
	t.Logf("%d mutations, %d killed", workers*perWorker, total)
	if total == 0 {
		t.Fatal("no writer was killed: the test did not test anything")
	}
	// The next writer settles what killed ones left.
	e.ok("qvm-create", "--class", "StandaloneVM", "-l", "red", "final")
	names := map[string]bool{}
	for _, n := range strings.Fields(e.ok("qvm-ls", "--raw-list")) {
		names[n] = true
	}
	for w, r := range results {
		got, _ := strconv.Atoi(strings.TrimSpace(e.ok("qvm-prefs", fmt.Sprintf("w%d", w), "memory")))
		ok := got == r.lastOK
		for _, m := range r.maybe {
			ok = ok || got == m
		}
		if !ok {
			t.Errorf("w%d memory = %d; last reported set %d, killed after it %v", w, got, r.lastOK, r.maybe)
		}
		removed := map[string]bool{}
		for _, n := range r.removed {
			removed[n] = true
			if names[n] {
				t.Errorf("VM %s was reported removed but is there", n)
			}
		}
		for _, n := range r.created {
			if !names[n] && !removed[n] {
				t.Errorf("VM %s was reported created but is gone", n)
			}
		}
		for _, m := range r.moves {
			_, err := os.Stat(m.image)
			user := err == nil
			switch {
			case !user && !names[m.vm] && !removed[m.vm]:
				t.Errorf("the user's image %s is lost: no VM %s has it and its file is gone (killed %v)", m.image, m.vm, m.killed)
			case user && names[m.vm]:
				t.Errorf("VM %s has the moved image but its user name %s is still there (killed %v)", m.vm, m.image, m.killed)
			case !m.killed && user:
				t.Errorf("a move into %s reported done but left %s", m.vm, m.image)
			}
		}
	}
	// Every VM in the store has its images; a killed create that did not
	// land leaves nothing.
	for n := range names {
		if n == "dom0" {
			continue
		}
		for _, vol := range []string{"root", "private", "volatile"} {
			if _, err := os.Stat(filepath.Join(e.dir, "appvms", n, vol+".img")); err != nil {
				t.Errorf("VM %s: %v", n, err)
			}
		}
	}
	entries, _ := os.ReadDir(filepath.Join(e.dir, "appvms"))
	for _, ent := range entries {
		if !names[ent.Name()] {
			t.Errorf("directory appvms/%s belongs to no VM", ent.Name())
		}
		if _, err := os.Stat(filepath.Join(e.dir, "appvms", ent.Name(), ".qvm-pending")); err == nil {
			t.Errorf("appvms/%s still marked pending", ent.Name())
		}
	}
	if m, _ := filepath.Glob(filepath.Join(e.dir, ".qvm.json.tmp-*")); len(m) != 0 {
		t.Errorf("temporary store files left: %v", m)
	}
}
