//go:build cgo

package xl

/*
#include <stdint.h>
*/
import "C"

import (
	"context"
	"log/slog"
	"runtime/cgo"
	"strings"
	"syscall"
)

// Functions C calls back into. They only look up the Go side by its
// cgo.Handle and hand the data over; they never call back into libxl.

//export qvmLogMessage
func qvmLogMessage(h C.uintptr_t, level C.int, errnoval C.int, context_ *C.char, msg *C.char) {
	cb := cgo.Handle(h).Value().(*callbacks)
	ctxName := "libxl"
	if context_ != nil {
		ctxName = C.GoString(context_)
	}
	text := strings.TrimRight(C.GoString(msg), "\n")
	attrs := []slog.Attr{slog.String("from", ctxName)}
	if errnoval > 0 {
		attrs = append(attrs, slog.String("errno", syscall.Errno(errnoval).Error()))
	}
	cb.log.LogAttrs(context.Background(), levelFor(int(level), text), text, attrs...)
}

//export qvmEvent
func qvmEvent(h C.uintptr_t, typ C.int, domid C.uint32_t, forUser C.uint64_t, detail C.int) {
	cb := cgo.Handle(h).Value().(*callbacks)
	cb.deliver(domEvent{kind: int(typ), domid: uint32(domid), token: uint64(forUser), detail: int(detail)})
}

//export qvmEventDisaster
func qvmEventDisaster(h C.uintptr_t, typ C.int, msg *C.char, errnoval C.int) {
	cb := cgo.Handle(h).Value().(*callbacks)
	cb.log.Error("libxl event machinery failed: events may be lost", "event_type", int(typ), "msg", C.GoString(msg), "errno", syscall.Errno(errnoval).Error())
	cb.disaster()
}
