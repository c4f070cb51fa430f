package xl

import (
	"log/slog"
	"testing"
)

func TestLevelFor(t *testing.T) {
	for _, c := range []struct {
		level int
		text  string
		want  slog.Level
	}{
		{xtlWarn, "libxl_dm.c:2025:libxl__build_device_model_args_new: Domain 8:Only 4 emulated IDE disks are supported.\nDisk xvde will be available via PV drivers but not as an emulated disk.", slog.LevelInfo},
		{xtlWarn, "some other warning", slog.LevelWarn},
		{xtlError, "Only 4 emulated IDE disks are supported.", slog.LevelError},
		{xtlDebug, "x", slog.LevelDebug},
	} {
		if got := levelFor(c.level, c.text); got != c.want {
			t.Errorf("levelFor(%d, %q) = %v, want %v", c.level, c.text, got, c.want)
		}
	}
}
