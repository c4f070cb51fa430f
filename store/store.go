// Package store keeps qvm's VM definitions durably under one state
// directory (default /var/lib/qvm).
//
// All definitions live in one JSON document, replaced atomically: a writer
// takes an exclusive flock on the lock file, reads the current document,
// changes it, writes a temporary file, fsyncs it, renames it over the
// document and fsyncs the directory. Readers take no lock: they read
// whichever complete document the last rename installed, so they never
// see a half-written store and never wait for a writer.
//
// The directory also holds the VMs' images (appvms/NAME, vm-templates/NAME)
// and the VM kernels (vm-kernels/VERSION).
package store

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strings"

	"golang.org/x/sys/unix"

	"github.com/qvm-project/qvm/vm"
)

// DefaultDir is the state directory when neither --dir nor QVM_DIR is given.
const DefaultDir = "/var/lib/qvm"

// EnvDir names the environment variable that overrides DefaultDir.
const EnvDir = "QVM_DIR"

const (
	docName  = "qvm.json"
	prevName = "qvm.json.prev"
	lockName = "qvm.lock"
	tmpGlob  = ".qvm.json.tmp-*"
	// formatVersion is the version of the document layout.
	formatVersion = 1
)

// Store is one state directory.
type Store struct {
	dir string
}

// document is the on-disk form of a system.
type document struct {
	Version int               `json:"version"`
	Global  map[string]string `json:"global,omitempty"`
	VMs     []*vm.Definition  `json:"vms"`
}

// Open opens (creating if needed) the state directory dir.
func Open(dir string) (*Store, error) {
	if dir == "" {
		return nil, errors.New("state directory is empty: give --dir DIR or set QVM_DIR")
	}
	abs, err := filepath.Abs(dir)
	if err != nil {
		return nil, fmt.Errorf("state directory %s: %w", dir, err)
	}
	if err := os.MkdirAll(abs, 0o755); err != nil {
		return nil, fmt.Errorf("create state directory %s: %w", abs, err)
	}
	return &Store{dir: abs}, nil
}

// Dir is the state directory.
func (s *Store) Dir() string { return s.dir }

// Path is the store document.
func (s *Store) Path() string { return filepath.Join(s.dir, docName) }

// PrevPath is the document before the last change: the previous good
// store, kept to recover from a damaged one.
func (s *Store) PrevPath() string { return filepath.Join(s.dir, prevName) }

// Load reads the current definitions without taking the lock.
func (s *Store) Load() (*vm.System, error) {
	data, err := os.ReadFile(s.Path())
	if errors.Is(err, fs.ErrNotExist) {
		return vm.NewSystem(), nil
	}
	if err != nil {
		return nil, fmt.Errorf("read store: %w", err)
	}
	sys, err := decode(s.Path(), data)
	if err != nil {
		return nil, fmt.Errorf("%w; the store before the last change is %s: check it (qvm-ls --dir on a copy of the directory "+
			"holding it as %s) and, if it is good, restore it with: mv %s %s", err, s.PrevPath(), docName, s.PrevPath(), s.Path())
	}
	return sys, nil
}

func decode(path string, data []byte) (*vm.System, error) {
	var doc document
	if err := json.Unmarshal(data, &doc); err != nil {
		return nil, fmt.Errorf("store %s is corrupt: %w", path, err)
	}
	if doc.Version != formatVersion {
		return nil, fmt.Errorf("store %s has format version %d; this qvm reads version %d", path, doc.Version, formatVersion)
	}
	sys := &vm.System{Global: doc.Global, VMs: doc.VMs}
	if err := sys.Normalize(); err != nil {
		return nil, fmt.Errorf("store %s is corrupt: %w", path, err)
	}
	if err := sys.Validate(); err != nil {
		return nil, fmt.Errorf("store %s is corrupt: %w", path, err)
	}
	return sys, nil
}

// Tx is one change to the store, made under the writer lock.
type Tx struct {
	// Sys is the current system, to change in place.
	Sys    *vm.System
	store  *Store
	undo   []func()
	after  []func()
	commit bool
}

// OnAbort registers a function that undoes a side effect (a file made for
// the change) if the change is not committed. They run in reverse order.
func (tx *Tx) OnAbort(f func()) { tx.undo = append(tx.undo, f) }

// AfterCommit registers a function to run once the change is durable,
// still under the lock (e.g. deleting a removed VM's images).
func (tx *Tx) AfterCommit(f func()) { tx.after = append(tx.after, f) }

// Store is the store the change is made in.
func (tx *Tx) Store() *Store { return tx.store }

// Update runs fn on the current system under the writer lock and, if fn
// succeeds, makes the result durable. If fn fails (or ctx ends first),
// nothing is written and the OnAbort functions run.
func (s *Store) Update(ctx context.Context, host vm.Host, fn func(tx *Tx) error) error {
	unlock, err := s.lock(ctx)
	if err != nil {
		return err
	}
	defer unlock()
	s.removeStaleTemps()

	sys, err := s.Load()
	if err != nil {
		return err
	}
	s.sweep(sys)
	sys.Host = host
	tx := &Tx{Sys: sys, store: s}
	defer func() {
		if !tx.commit {
			for i := len(tx.undo) - 1; i >= 0; i-- {
				tx.undo[i]()
			}
		}
	}()
	if err := fn(tx); err != nil {
		return err
	}
	if err := ctx.Err(); err != nil {
		return fmt.Errorf("store change cancelled: %w", err)
	}
	if err := tx.Sys.Check(); err != nil {
		return err
	}
	landed, err := s.write(tx.Sys)
	// Once the new document is in place the change has happened, even if
	// making that durable failed: undoing its side effects now would
	// leave a store that names images which are gone.
	tx.commit = landed
	if landed {
		for _, f := range tx.after {
			f()
		}
	}
	return err
}

// write replaces the document atomically and durably. landed reports
// whether the new document replaced the old one (even if an error came
// after that, from making it durable).
func (s *Store) write(sys *vm.System) (landed bool, err error) {
	data, err := json.MarshalIndent(document{Version: formatVersion, Global: sys.Global, VMs: sys.VMs}, "", " ")
	if err != nil {
		return false, fmt.Errorf("encode store: %w", err)
	}
	data = append(data, '\n')
	f, err := os.CreateTemp(s.dir, strings.Replace(tmpGlob, "*", "", 1)+"*")
	if err != nil {
		return false, fmt.Errorf("write store: %w", err)
	}
	tmp := f.Name()
	ok := false
	defer func() {
		if !ok {
			f.Close()
			os.Remove(tmp)
		}
	}()
	if err := f.Chmod(0o644); err != nil {
		return false, fmt.Errorf("write store %s: %w", tmp, err)
	}
	if _, err := f.Write(data); err != nil {
		return false, fmt.Errorf("write store %s: %w", tmp, err)
	}
	if err := f.Sync(); err != nil {
		return false, fmt.Errorf("sync store %s: %w", tmp, err)
	}
	if err := f.Close(); err != nil {
		return false, fmt.Errorf("close store %s: %w", tmp, err)
	}
	// The current document becomes the previous one: a second name for
	// the same (durable) file, made atomically, so that there is always a
	// complete qvm.json.prev once a second change has committed.
	prevTmp := tmp + ".prev"
	if err := os.Link(s.Path(), prevTmp); err == nil {
		if err := os.Rename(prevTmp, s.PrevPath()); err != nil {
			os.Remove(prevTmp)
			return false, fmt.Errorf("keep the previous store as %s: %w", s.PrevPath(), err)
		}
	} else if !errors.Is(err, fs.ErrNotExist) {
		return false, fmt.Errorf("keep the previous store as %s: %w", s.PrevPath(), err)
	}
	if err := os.Rename(tmp, s.Path()); err != nil {
		return false, fmt.Errorf("install store %s: %w", s.Path(), err)
	}
	ok = true
	return true, syncDir(s.dir)
}

func syncDir(dir string) error {
	d, err := os.Open(dir)
	if err != nil {
		return fmt.Errorf("sync directory %s: %w", dir, err)
	}
	defer d.Close()
	if err := d.Sync(); err != nil {
		return fmt.Errorf("sync directory %s: %w", dir, err)
	}
	return nil
}

// removeStaleTemps deletes temporary documents left by a writer that was
// killed; only called under the lock.
func (s *Store) removeStaleTemps() {
	matches, _ := filepath.Glob(filepath.Join(s.dir, tmpGlob))
	for _, m := range matches {
		os.Remove(m)
	}
}

// lock takes the writer lock, waiting in the kernel's queue; ctx ends the
// wait.
func (s *Store) lock(ctx context.Context) (unlock func(), err error) {
	f, err := os.OpenFile(filepath.Join(s.dir, lockName), os.O_RDWR|os.O_CREATE, 0o644)
	if err != nil {
		return nil, fmt.Errorf("open store lock: %w", err)
	}
	release := func() {
		unix.Flock(int(f.Fd()), unix.LOCK_UN)
		f.Close()
	}
	if err := unix.Flock(int(f.Fd()), unix.LOCK_EX|unix.LOCK_NB); err == nil {
		return release, nil
	}
	got := make(chan error, 1)
	go func() {
		var err error
		for {
			err = unix.Flock(int(f.Fd()), unix.LOCK_EX)
			if err != unix.EINTR {
				break
			}
		}
		got <- err
	}()
	select {
	case err := <-got:
		if err != nil {
			f.Close()
			return nil, fmt.Errorf("lock store %s: %w", s.dir, err)
		}
		return release, nil
	case <-ctx.Done():
		// The waiting goroutine gives the lock straight back once it gets it.
		go func() {
			if err := <-got; err == nil {
				release()
			} else {
				f.Close()
			}
		}()
		return nil, fmt.Errorf("waiting for the store lock (another qvm command is changing %s): %w", s.dir, ctx.Err())
	}
}

// Locked runs fn on the current system under the writer lock without
// changing the store: for operations (such as starting a VM) that must
// not overlap a change of the definitions they read.
func (s *Store) Locked(ctx context.Context, host vm.Host, fn func(sys *vm.System) error) error {
	unlock, err := s.lock(ctx)
	if err != nil {
		return err
	}
	defer unlock()
	sys, err := s.Load()
	if err != nil {
		return err
	}
	sys.Host = host
	return fn(sys)
}
