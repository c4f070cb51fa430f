package xenstore_test

import (
	"bytes"
	"errors"
	"fmt"
	"syscall"
	"testing"

	"github.com/qvm-project/qvm/xenstore"
	"github.com/qvm-project/qvm/xenstore/xenstoretest"
)

// What an unprivileged domain may do, checked by the daemon on requests
// that come through the domain's ring (not dom0's socket).
func TestGuestPermissions(t *testing.T) {
	d := xenstoretest.Start(t)
	dom0 := d.Client()
	ctx := testCtx(t)

	mustWrite(t, dom0, "/local/domain/5/secret", "for 5")
	if err := dom0.SetPerms(ctx, "/local/domain/5", xenstore.NewPerms(0, xenstore.AccessNone, xenstore.Perm{Domid: 5, Access: xenstore.AccessRead})); err != nil {
		t.Fatal(err)
	}
	if err := dom0.SetPerms(ctx, "/local/domain/5/secret", xenstore.NewPerms(0, xenstore.AccessNone, xenstore.Perm{Domid: 5, Access: xenstore.AccessRead})); err != nil {
		t.Fatal(err)
	}
	g5, g6 := d.Guest(5), d.Guest(6)

	if v, err := g5.ReadString(ctx, "/local/domain/5/secret"); err != nil || v != "for 5" {
		t.Fatalf("dom5 reads its key: %q, %v", v, err)
	}
	// Relative paths are below the domain's home.
	if v, err := g5.ReadString(ctx, "secret"); err != nil || v != "for 5" {
		t.Fatalf("dom5 reads its key by relative path: %q, %v", v, err)
	}
	if names, err := g5.Directory(ctx, "/local/domain/5"); err != nil || len(names) != 1 {
		t.Fatalf("dom5 lists its home: %q, %v", names, err)
	}
	if err := g5.WriteString(ctx, "/local/domain/5/secret", "changed"); !errors.Is(err, syscall.EACCES) {
		t.Fatalf("dom5 overwrites a read-only key: %v, want EACCES", err)
	}
	if err := g5.WriteString(ctx, "/local/domain/5/new", "x"); !errors.Is(err, syscall.EACCES) {
		t.Fatalf("dom5 creates a key in a read-only dir: %v, want EACCES", err)
	}
	if err := g5.Rm(ctx, "/local/domain/5/secret"); !errors.Is(err, syscall.EACCES) {
		t.Fatalf("dom5 removes a read-only key: %v, want EACCES", err)
	}
	if err := g5.SetPerms(ctx, "/local/domain/5/secret", xenstore.NewPerms(5, xenstore.AccessBoth)); !errors.Is(err, syscall.EACCES) {
		t.Fatalf("dom5 changes perms of a key it does not own: %v, want EACCES", err)
	}
	if _, err := g6.Read(ctx, "/local/domain/5/secret"); !errors.Is(err, syscall.EACCES) {
		t.Fatalf("dom6 reads dom5's key: %v, want EACCES", err)
	}
	if _, err := g6.Directory(ctx, "/local/domain/5"); !errors.Is(err, syscall.EACCES) {
		t.Fatalf("dom6 lists dom5's home: %v, want EACCES", err)
	}
	// Privileged operations.
	if err := g5.Introduce(ctx, 7, 0, 1); !errors.Is(err, syscall.EACCES) {
		t.Fatalf("dom5 introduces a domain: %v, want EACCES", err)
	}
	if _, err := g5.IsDomainIntroduced(ctx, 0); !errors.Is(err, syscall.EACCES) {
		t.Fatalf("dom5 asks is-introduced: %v, want EACCES", err)
	}
	if v := mustRead(t, dom0, "/local/domain/5/secret"); v != "for 5" {
		t.Fatalf("key changed to %q", v)
	}

	// A guest sees watch events only for nodes it may read.
	w6, err := g6.Watch(ctx, "/local/domain/5")
	if err != nil {
		t.Fatal(err)
	}
	w5, err := g5.Watch(ctx, "/local/domain/5")
	if err != nil {
		t.Fatal(err)
	}
	nextEvent(t, w5)
	mustWrite(t, dom0, "/local/domain/5/secret", "v2")
	if e := nextEvent(t, w5); e.Path != "/local/domain/5/secret" {
		t.Fatalf("dom5 event: %+v", e)
	}
	// dom6's first event (the watch firing once) is sent regardless; after
	// it, nothing about dom5's keys.
	if e := nextEvent(t, w6); e.Path != "/local/domain/5" {
		t.Fatalf("dom6 first event: %+v", e)
	}
	// A round trip on g6 after the write: any event would have come first.
	if _, err := g6.GetDomainPath(ctx, 6); err != nil {
		t.Fatal(err)
	}
	noEvent(t, w6)
}

// Quotas apply to unprivileged domains; the errors come back as errnos.
func TestGuestQuotas(t *testing.T) {
	d := xenstoretest.Start(t, "--entry-nb=8", "--entry-size=200", "--watch-nb=2", "--transaction=1")
	dom0 := d.Client()
	ctx := testCtx(t)
	if err := dom0.Mkdir(ctx, "/local/domain/5"); err != nil {
		t.Fatal(err)
	}
	if err := dom0.SetPerms(ctx, "/local/domain/5", xenstore.NewPerms(5, xenstore.AccessNone)); err != nil {
		t.Fatal(err)
	}
	g := d.Guest(5)

	// Entries per domain.
	var quotaErr error
	created := 0
	for i := range 20 {
		err := g.WriteString(ctx, fmt.Sprintf("data/k%d", i), "v")
		if err != nil {
			quotaErr = err
			break
		}
		created++
	}
	if !errors.Is(quotaErr, syscall.ENOSPC) || !xenstore.IsQuota(quotaErr) {
		t.Fatalf("entry quota: after %d entries got %v, want ENOSPC", created, quotaErr)
	}
	if created > 8 {
		t.Fatalf("created %d entries with a quota of 8", created)
	}
	t.Logf("entry quota error after %d entries: %v", created, quotaErr)
	// dom0 is not limited.
	for i := range 20 {
		mustWrite(t, dom0, fmt.Sprintf("/vm/k%d", i), "v")
	}
	if err := g.Rm(ctx, "data"); err != nil {
		t.Fatal(err)
	}

	// Size of one entry.
	if err := g.Write(ctx, "small", bytes.Repeat([]byte("x"), 50)); err != nil {
		t.Fatalf("small value: %v", err)
	}
	if err := g.Write(ctx, "large", bytes.Repeat([]byte("x"), 300)); !errors.Is(err, syscall.ENOSPC) {
		t.Fatalf("value over the entry-size quota: %v, want ENOSPC", err)
	}
	if err := dom0.Write(ctx, "/local/domain/5/large", bytes.Repeat([]byte("x"), 300)); err != nil {
		t.Fatalf("dom0 writes a large value: %v", err)
	}

	// Watches per domain: the daemon says E2BIG.
	var watchErr error
	for i := range 5 {
		if _, err := g.Watch(ctx, fmt.Sprintf("w%d", i)); err != nil {
			watchErr = err
			break
		}
	}
	if !errors.Is(watchErr, syscall.E2BIG) {
		t.Fatalf("watch quota: %v, want E2BIG", watchErr)
	}

	// Open transactions per domain.
	var txErr error
	for range 5 {
		if _, err := g.Begin(ctx); err != nil {
			txErr = err
			break
		}
	}
	if !errors.Is(txErr, syscall.ENOSPC) {
		t.Fatalf("transaction quota: %v, want ENOSPC", txErr)
	}
}
