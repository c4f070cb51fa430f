package store

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/qvm-project/qvm/vm"
)

func TestUpdateCommitsOrLeavesNothing(t *testing.T) {
	st, err := Open(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	create := func(tx *Tx, name string) error {
		d, err := tx.Sys.Create(vm.CreateSpec{Name: name, Class: vm.StandaloneVM, Label: "red", UUID: "u-" + name})
		if err != nil {
			return err
		}
		_, err = tx.NewVMDir(d.Name, d.Class)
		return err
	}
	if err := st.Update(ctx, vm.Host{}, func(tx *Tx) error { return create(tx, "a") }); err != nil {
		t.Fatal(err)
	}
	boom := errors.New("boom")
	if err := st.Update(ctx, vm.Host{}, func(tx *Tx) error {
		if err := create(tx, "b"); err != nil {
			return err
		}
		return boom
	}); !errors.Is(err, boom) {
		t.Fatalf("err = %v", err)
	}
	sys, err := st.Load()
	if err != nil {
		t.Fatal(err)
	}
	if _, ok := sys.Lookup("a"); !ok {
		t.Error("committed VM a missing")
	}
	if _, ok := sys.Lookup("b"); ok {
		t.Error("aborted VM b stored")
	}
	if _, err := os.Stat(st.VMDir("b", vm.StandaloneVM)); !os.IsNotExist(err) {
		t.Errorf("aborted VM b's directory remains: %v", err)
	}
	if _, err := os.Stat(filepath.Join(st.VMDir("a", vm.StandaloneVM), pendingMarker)); !os.IsNotExist(err) {
		t.Errorf("committed VM a still pending: %v", err)
	}
}

func TestLoadRejectsCorruptStore(t *testing.T) {
	st, _ := Open(t.TempDir())
	for content, want := range map[string]string{
		`{"version":1,"vms":[{"name":"a","qid":1},{"name":"a","qid":2}]}`: "two VMs named",
		`{"version":1,"vms":[{"name":"a","qid":1},{"name":"b","qid":1}]}`: "same qid",
		`{"version":7,"vms":[]}`: "format version 7",
		`{"version":1,"vms":[`:   "corrupt",
	} {
		os.WriteFile(st.Path(), []byte(content), 0o644)
		if _, err := st.Load(); err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("load %s: %v, want %q", content, err, want)
		}
	}
}

func TestLockWaitEndsWithContext(t *testing.T) {
	st, _ := Open(t.TempDir())
	held := make(chan struct{})
	release := make(chan struct{})
	go st.Update(context.Background(), vm.Host{}, func(tx *Tx) error {
		close(held)
		<-release
		return nil
	})
	<-held
	ctx, cancel := context.WithCancel(context.Background())
	go func() { time.Sleep(50 * time.Millisecond); cancel() }()
	err := st.Update(ctx, vm.Host{}, func(tx *Tx) error { t.Error("ran without the lock"); return nil })
	if !errors.Is(err, context.Canceled) || !strings.Contains(err.Error(), "store lock") {
		t.Errorf("err = %v", err)
	}
	close(release)
	// The lock is usable again afterwards.
	if err := st.Update(context.Background(), vm.Host{}, func(tx *Tx) error { return nil }); err != nil {
		t.Fatal(err)
	}
}
