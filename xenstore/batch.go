package xenstore

import (
	"context"
	"errors"
	"fmt"
	"syscall"
)

// Batch collects requests and sends them together: they are written to the
// daemon in one go and are all in flight at once, so n requests cost about
// one round trip instead of n. The daemon still handles them in order. Make
// one with Client.Batch or Transaction.Batch; a Batch is for one goroutine
// and one Run.
type Batch struct {
	c    *Client
	tx   *Transaction
	reqs []*request
	errs []error         // errors found while adding (bad path, too big)
	outs []*[]byte       // where a read's value goes
	oks  []syscall.Errno // an error that counts as success, or 0
}

// Batch returns an empty batch of requests outside any transaction.
func (c *Client) Batch() *Batch { return &Batch{c: c} }

// Batch returns an empty batch of requests in the transaction.
func (tx *Transaction) Batch() *Batch { return &Batch{c: tx.c, tx: tx} }

func (b *Batch) add(t msgType, path string, out *[]byte, parts ...[]byte) bool {
	r := &request{t: t, path: path, parts: parts}
	if err := checkRequest(r); err != nil {
		b.errs = append(b.errs, opError(t, path, err))
		return false
	}
	b.reqs = append(b.reqs, r)
	b.outs = append(b.outs, out)
	b.oks = append(b.oks, 0)
	return true
}

// Write adds a write of value to the node at path.
func (b *Batch) Write(path string, value []byte) {
	b.add(msgWrite, path, nil, cstr(path), value)
}

// WriteString adds a write of a string value.
func (b *Batch) WriteString(path, value string) {
	b.add(msgWrite, path, nil, cstr(path), []byte(value))
}

// Mkdir adds a mkdir of path.
func (b *Batch) Mkdir(path string) { b.add(msgMkdir, path, nil, cstr(path)) }

// Rm adds a removal of path.
func (b *Batch) Rm(path string) { b.add(msgRm, path, nil, cstr(path)) }

// RmIfExists adds a removal of path that also succeeds when the parent of
// path does not exist (Rm fails then with ENOENT).
func (b *Batch) RmIfExists(path string) {
	if b.add(msgRm, path, nil, cstr(path)) {
		b.oks[len(b.oks)-1] = syscall.ENOENT
	}
}

// SetPerms adds a change of the permissions of path.
func (b *Batch) SetPerms(path string, perms Perms) {
	if len(perms) == 0 {
		b.errs = append(b.errs, opError(msgSetPerms, path, errEmptyPerms))
		return
	}
	b.add(msgSetPerms, path, nil, cstr(path), perms.payload())
}

// Read adds a read of path; after a successful Run, *dst holds the value.
func (b *Batch) Read(path string, dst *[]byte) { b.add(msgRead, path, dst, cstr(path)) }

// Run sends the requests and waits for every reply. It returns nil when all
// succeeded, else the errors of those that failed, joined (each an *Error
// naming its path; errors.Is sees through the join). Requests are not
// undone when others fail: use a transaction's batch for all-or-nothing.
func (b *Batch) Run(ctx context.Context) error {
	if len(b.errs) > 0 {
		return errors.Join(b.errs...)
	}
	if len(b.reqs) == 0 {
		return nil
	}
	var cn *conn
	var err error
	if b.tx != nil {
		cn, err = b.tx.conn()
		for _, r := range b.reqs {
			r.tx = b.tx.id
		}
	} else {
		cn, err = b.c.conn(ctx)
	}
	if err != nil {
		return opError(b.reqs[0].t, b.reqs[0].path, err)
	}
	if err := cn.send(ctx, b.reqs); err != nil {
		return opError(b.reqs[0].t, b.reqs[0].path, err)
	}
	if err := cn.wait(ctx, b.reqs); err != nil {
		return opError(b.reqs[0].t, b.reqs[0].path, err)
	}
	var errs []error
	for i, r := range b.reqs {
		if r.res.err != nil {
			// The connection broke: the same error for every request.
			return opError(r.t, r.path, fmt.Errorf("batch of %d requests: %w", len(b.reqs), r.res.err))
		}
		p, err := checkReply(r)
		if b.oks[i] != 0 && errors.Is(err, b.oks[i]) {
			err = nil
		}
		if err == nil && b.outs[i] != nil {
			*b.outs[i] = p
		}
		if err != nil {
			errs = append(errs, opError(r.t, r.path, err))
		}
	}
	return errors.Join(errs...)
}
