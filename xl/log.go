package xl

import (
	"context"
	"log/slog"
	"strings"
)

// xentoollog levels (xentoollog.h).
const (
	xtlDebug    = 1
	xtlVerbose  = 2
	xtlDetail   = 3
	xtlProgress = 4
	xtlInfo     = 5
	xtlNotice   = 6
	xtlWarn     = 7
	xtlError    = 8
	xtlCritical = 9
)

// slogLevel maps a xentoollog level to slog's.
func slogLevel(l int) slog.Level {
	switch {
	case l >= xtlError:
		return slog.LevelError
	case l == xtlWarn:
		return slog.LevelWarn
	case l >= xtlInfo:
		return slog.LevelInfo
	}
	return slog.LevelDebug
}

// intendedWarnings are libxl warnings about what qvm asks for on purpose,
// logged at info level so that users do not see them at every start: an
// HVM that boots a dom0 kernel has its kernel and initramfs discs past
// the four IDE slots, for its stubdomain.
var intendedWarnings = []string{"Only 4 emulated IDE disks are supported."}

// levelFor is the slog level of a libxl message of xentoollog level l.
func levelFor(l int, text string) slog.Level {
	lv := slogLevel(l)
	if lv == slog.LevelWarn {
		for _, w := range intendedWarnings {
			if strings.Contains(text, w) {
				return slog.LevelInfo
			}
		}
	}
	return lv
}

// xtlMinLevel is the lowest xentoollog level the logger wants, so that
// libxl's debug chatter is not even formatted when nobody reads it.
func xtlMinLevel(log *slog.Logger) int {
	ctx := context.Background()
	switch {
	case log.Enabled(ctx, slog.LevelDebug):
		return xtlDebug
	case log.Enabled(ctx, slog.LevelInfo):
		return xtlInfo
	case log.Enabled(ctx, slog.LevelWarn):
		return xtlWarn
	}
	return xtlError
}
