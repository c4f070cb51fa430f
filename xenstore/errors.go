package xenstore

import (
	"errors"
	"fmt"
	"syscall"
)

// EQUOTA is the errno that quota errors match. oxenstored names a quota
// error "EQUOTA", which has no errno of its own; it is reported as EDQUOT.
// The C xenstored reports quota errors as ENOSPC (entries, nodes,
// transactions) or E2BIG (watches).
const EQUOTA = syscall.EDQUOT

// daemonErrnos maps the error names a daemon sends in XS_ERROR replies to
// errno values (the xsd_errors table of Xen's xs_wire.h, plus EQUOTA).
var daemonErrnos = map[string]syscall.Errno{
	"EINVAL":    syscall.EINVAL,
	"EACCES":    syscall.EACCES,
	"EEXIST":    syscall.EEXIST,
	"EISDIR":    syscall.EISDIR,
	"ENOENT":    syscall.ENOENT,
	"ENOMEM":    syscall.ENOMEM,
	"ENOSPC":    syscall.ENOSPC,
	"EIO":       syscall.EIO,
	"ENOTEMPTY": syscall.ENOTEMPTY,
	"ENOSYS":    syscall.ENOSYS,
	"EROFS":     syscall.EROFS,
	"EBUSY":     syscall.EBUSY,
	"EAGAIN":    syscall.EAGAIN,
	"EISCONN":   syscall.EISCONN,
	"E2BIG":     syscall.E2BIG,
	"EPERM":     syscall.EPERM,
	"EQUOTA":    EQUOTA,
}

// DaemonError is an error name from the daemon that has no errno mapping.
type DaemonError string

func (e DaemonError) Error() string { return "xenstore daemon error " + string(e) }

// daemonError turns an XS_ERROR payload into an error: a syscall.Errno when
// the name is known, else a DaemonError.
func daemonError(payload []byte) error {
	name, err := oneString(payload)
	if err != nil {
		return err
	}
	if e, ok := daemonErrnos[name]; ok {
		return e
	}
	if len(name) > 64 {
		name = name[:64]
	}
	return DaemonError(name)
}

var (
	// ErrClosed is returned by calls on a Client after Close.
	ErrClosed = errors.New("xenstore client closed")
	// ErrConnectionLost is returned by calls whose request was sent on a
	// connection that broke before the reply came (the daemon exited or
	// restarted). The request may or may not have taken effect. The next
	// call on the Client connects again.
	ErrConnectionLost = errors.New("connection to xenstore daemon lost")
	// ErrTransactionDone is returned by calls on a Transaction that was
	// already committed or aborted.
	ErrTransactionDone = errors.New("transaction already ended")
	// ErrWatchesReset ends the watches of a client that called ResetWatches.
	ErrWatchesReset = errors.New("watches reset")
)

// Error is the error returned by a failed operation. Err is a syscall.Errno
// for errors the daemon reported (match them with errors.Is(err,
// syscall.ENOENT) and so on), or one of this package's sentinel errors, or a
// lower-level error.
type Error struct {
	Op   string // operation, e.g. "read", "transaction-end"
	Path string // the path concerned, or "" when there is none
	Err  error
}

func (e *Error) Error() string {
	s := "xenstore " + e.Op
	if e.Path != "" {
		s += " " + e.Path
	}
	var errno syscall.Errno
	if errors.As(e.Err, &errno) {
		for name, v := range daemonErrnos {
			if v == errno && name != "EQUOTA" {
				return fmt.Sprintf("%s: %v (%s)", s, e.Err, name)
			}
		}
	}
	return s + ": " + e.Err.Error()
}

func (e *Error) Unwrap() error { return e.Err }

// IsQuota reports whether err is a daemon's quota error: ENOSPC from the C
// xenstored, EQUOTA from oxenstored.
func IsQuota(err error) bool {
	return errors.Is(err, syscall.ENOSPC) || errors.Is(err, EQUOTA)
}

func opError(t msgType, path string, err error) error {
	if err == nil {
		return nil
	}
	return &Error{Op: t.String(), Path: path, Err: err}
}
