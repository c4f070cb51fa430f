package crashdisk

import (
	"bufio"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"runtime"
	"sync"

	"golang.org/x/sys/unix"
)

// serveEnv, set to a disk's directory, makes a program that links this
// package serve that disk's FUSE file from init and exit (see New).
const serveEnv = "QVM_CRASHDISK_SERVE"

// The files in a disk's directory.
const (
	baseName    = "base.img"     // the disk as it started
	liveName    = "live.img"     // the disk as it is
	mountName   = "fuse"         // where the server mounts its file
	dataName    = "writes.log"   // the data of the logged writes
	entriesName = "entries.json" // the log, written when the server exits
)

func init() {
	if dir := os.Getenv(serveEnv); dir != "" {
		if err := serveDisk(dir); err != nil {
			fmt.Fprintln(os.Stderr, "crash disk server:", err)
			os.Exit(1)
		}
		os.Exit(0)
	}
}

// serveDisk is the server process: it mounts the live image of the disk
// in dir, says "ready" on stdout, marks each line read from stdin
// (answering "marked"), and serves until unmounted; then it writes the
// log.
func serveDisk(dir string) error {
	img, err := os.OpenFile(filepath.Join(dir, liveName), os.O_RDWR, 0)
	if err != nil {
		return err
	}
	defer img.Close()
	fi, err := img.Stat()
	if err != nil {
		return err
	}
	data, err := os.Create(filepath.Join(dir, dataName))
	if err != nil {
		return err
	}
	defer data.Close()
	fd, err := unix.Open("/dev/fuse", unix.O_RDWR|unix.O_CLOEXEC, 0)
	if err != nil {
		return fmt.Errorf("open /dev/fuse: %w (is the fuse module loaded?)", err)
	}
	dev := os.NewFile(uintptr(fd), "/dev/fuse")
	defer dev.Close()
	mnt := filepath.Join(dir, mountName)
	opts := fmt.Sprintf("fd=%d,rootmode=40000,user_id=0,group_id=0,allow_other", fd)
	if err := unix.Mount("crashdisk", mnt, "fuse", unix.MS_NOSUID|unix.MS_NODEV, opts); err != nil {
		return fmt.Errorf("mount FUSE at %s: %w", mnt, err)
	}
	log := &writeLog{f: data}
	s := &server{dev: dev, img: img, size: fi.Size(), log: log, done: make(chan struct{})}
	go func() {
		// The thread serving requests should not wait, when it needs
		// memory, for the writeback of pages that only it can write
		// (this needs CAP_SYS_RESOURCE, which a container may lack;
		// memory is then only a risk under heavy pressure).
		runtime.LockOSThread()
		unix.Prctl(unix.PR_SET_IO_FLUSHER, 1, 0, 0, 0)
		s.serve()
	}()
	fmt.Println("ready")
	go func() {
		in := bufio.NewScanner(os.Stdin)
		for in.Scan() {
			log.mark(in.Text())
			fmt.Println("marked")
		}
	}()
	<-s.done
	if err := s.failure(); err != nil {
		return err
	}
	return log.save(filepath.Join(dir, entriesName))
}

type kind uint8

const (
	kindWrite kind = iota
	kindZero
	kindFlush
	kindMark
)

// entry is one logged event; a write's data is in the data file at At.
type entry struct {
	Kind kind   `json:"k"`
	Off  int64  `json:"o,omitempty"`
	N    int64  `json:"n,omitempty"`
	At   int64  `json:"a,omitempty"`
	Name string `json:"m,omitempty"`
}

// writeLog is the ordered log of a disk's writes, flushes and marks.
type writeLog struct {
	mu      sync.Mutex
	f       *os.File // the data file, while logging
	path    string   // the data file, when read back
	end     int64
	entries []entry
}

func (l *writeLog) write(off int64, data []byte) error {
	l.mu.Lock()
	defer l.mu.Unlock()
	if _, err := l.f.WriteAt(data, l.end); err != nil {
		return fmt.Errorf("log a write: %w", err)
	}
	l.entries = append(l.entries, entry{Kind: kindWrite, Off: off, N: int64(len(data)), At: l.end})
	l.end += int64(len(data))
	return nil
}

func (l *writeLog) zero(off, n int64) error {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.entries = append(l.entries, entry{Kind: kindZero, Off: off, N: n})
	return nil
}

func (l *writeLog) flush() error {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.entries = append(l.entries, entry{Kind: kindFlush})
	return nil
}

func (l *writeLog) mark(name string) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.entries = append(l.entries, entry{Kind: kindMark, Name: name})
}

// save writes the entries to path.
func (l *writeLog) save(path string) error {
	l.mu.Lock()
	defer l.mu.Unlock()
	b, err := json.Marshal(l.entries)
	if err != nil {
		return err
	}
	return os.WriteFile(path, b, 0o600)
}

// readLog reads the log the server of the disk in dir wrote.
func readLog(dir string) (*writeLog, error) {
	b, err := os.ReadFile(filepath.Join(dir, entriesName))
	if err != nil {
		return nil, fmt.Errorf("read the log: %w", err)
	}
	l := &writeLog{path: filepath.Join(dir, dataName)}
	if err := json.Unmarshal(b, &l.entries); err != nil {
		return nil, fmt.Errorf("read the log: %w", err)
	}
	return l, nil
}
