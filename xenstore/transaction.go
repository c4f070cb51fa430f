package xenstore

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"sync"
	"syscall"
	"time"
)

// Transaction is a xenstore transaction: its reads see one snapshot and its
// writes take effect together at Commit, or not at all. Commit fails with
// EAGAIN (errors.Is(err, syscall.EAGAIN)) when another writer changed what
// the transaction touched; Client.Transaction retries for you. A
// Transaction belongs to the connection it began on: if that connection
// breaks, its calls fail with ErrConnectionLost. Its methods may be called
// concurrently; their requests are in flight together.
type Transaction struct {
	c  *Client
	cn *conn
	id uint32

	mu    sync.Mutex
	ended bool
}

// Begin starts a transaction.
func (c *Client) Begin(ctx context.Context) (*Transaction, error) {
	cn, err := c.conn(ctx)
	if err != nil {
		return nil, opError(msgTransactionStart, "", err)
	}
	p, err := cn.roundTrip(ctx, &request{t: msgTransactionStart, parts: [][]byte{{0}}})
	if err != nil {
		return nil, opError(msgTransactionStart, "", err)
	}
	s, err := oneString(p)
	if err != nil {
		return nil, opError(msgTransactionStart, "", err)
	}
	id, err := strconv.ParseUint(s, 10, 32)
	if err != nil || id == 0 {
		return nil, opError(msgTransactionStart, "", fmt.Errorf("%w: transaction id %q", errProtocol, s))
	}
	return &Transaction{c: c, cn: cn, id: uint32(id)}, nil
}

// ID returns the daemon's id for the transaction.
func (tx *Transaction) ID() uint32 { return tx.id }

func (tx *Transaction) conn() (*conn, error) {
	tx.mu.Lock()
	ended := tx.ended
	tx.mu.Unlock()
	if ended {
		return nil, ErrTransactionDone
	}
	if err := tx.cn.broken(); err != nil {
		return nil, err
	}
	return tx.cn, nil
}

func (tx *Transaction) isEnded() bool {
	tx.mu.Lock()
	defer tx.mu.Unlock()
	return tx.ended
}

// Commit ends the transaction, applying its writes. On EAGAIN nothing was
// applied and the whole transaction should be run again.
func (tx *Transaction) Commit(ctx context.Context) error { return tx.end(ctx, true) }

// Abort ends the transaction, discarding its writes.
func (tx *Transaction) Abort(ctx context.Context) error { return tx.end(ctx, false) }

func (tx *Transaction) end(ctx context.Context, commit bool) error {
	arg := []byte("F\x00")
	if commit {
		arg = []byte("T\x00")
	}
	_, err := tx.c.do(ctx, tx, msgTransactionEnd, "", arg)
	tx.mu.Lock()
	tx.ended = true
	tx.mu.Unlock()
	return err
}

// Read returns the value of the node at path, as the transaction sees it.
func (tx *Transaction) Read(ctx context.Context, path string) ([]byte, error) {
	return tx.c.read(ctx, tx, path)
}

// ReadString is Read returning a string.
func (tx *Transaction) ReadString(ctx context.Context, path string) (string, error) {
	v, err := tx.c.read(ctx, tx, path)
	return string(v), err
}

// WriteString is Write with a string value.
func (tx *Transaction) WriteString(ctx context.Context, path, value string) error {
	return tx.c.write(ctx, tx, path, []byte(value))
}

// Mkdir creates the node at path within the transaction.
func (tx *Transaction) Mkdir(ctx context.Context, path string) error {
	return tx.c.simple(ctx, tx, msgMkdir, path)
}

// Rm removes the node at path and everything below it within the
// transaction (see Client.Rm).
func (tx *Transaction) Rm(ctx context.Context, path string) error {
	return tx.c.simple(ctx, tx, msgRm, path)
}

// SetPerms replaces the permission list of the node at path within the
// transaction.
func (tx *Transaction) SetPerms(ctx context.Context, path string, perms Perms) error {
	return tx.c.setPerms(ctx, tx, path, perms)
}

// Transaction runs fn in a transaction and commits it. When the commit (or
// any call in fn) fails with EAGAIN, because another writer got in first,
// it runs fn again in a new transaction, after a short random pause, until
// it succeeds, fails otherwise, ctx ends, or the client's retry limit
// (Config.TransactionRetryLimit) has passed. When fn returns an error the
// transaction is aborted and the error returned. fn need not end tx
// itself and must not keep it.
func (c *Client) Transaction(ctx context.Context, fn func(tx *Transaction) error) error {
	backoff := time.Millisecond
	giveUp := time.Now().Add(c.retryFor)
	for attempt := 1; ; attempt++ {
		tx, err := c.Begin(ctx)
		if err != nil {
			return err
		}
		err = fn(tx)
		if err == nil {
			if !tx.isEnded() {
				err = tx.Commit(ctx)
			}
		} else if !tx.isEnded() {
			actx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 5*time.Second)
			tx.Abort(actx) // best effort: the daemon drops it with the connection anyway
			cancel()
		}
		if err == nil || !errors.Is(err, syscall.EAGAIN) {
			return err
		}
		if time.Now().After(giveUp) {
			return fmt.Errorf("xenstore transaction still conflicting with other writers after %d attempts in %v: %w", attempt, c.retryFor, err)
		}
		if err := sleepJitter(ctx, backoff); err != nil {
			return err
		}
		backoff = min(backoff*2, 100*time.Millisecond)
	}
}
