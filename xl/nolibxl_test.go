//go:build !cgo

package xl

import (
	"context"
	"errors"
	"strings"
	"testing"
)

// Without cgo, configs still validate and render as xl.cfg; everything
// that needs libxl says so.
func TestWithoutLibxl(t *testing.T) {
	cfg := validHVM()
	if _, err := JSON(cfg); !errors.Is(err, ErrNoLibxl) {
		t.Fatalf("JSON = %v, want ErrNoLibxl", err)
	}
	if !strings.Contains(ErrNoLibxl.Error(), "rebuild with cgo and libxen-dev") {
		t.Fatalf("ErrNoLibxl does not say how to fix it: %v", ErrNoLibxl)
	}
	bad := validHVM()
	bad.VCPUs = 0
	if _, err := JSON(bad); err == nil || errors.Is(err, ErrNoLibxl) {
		t.Fatalf("JSON of an invalid config = %v, want the validation error", err)
	}
	if _, err := Open(context.Background(), nil); !errors.Is(err, ErrNoLibxl) {
		t.Fatalf("Open = %v, want ErrNoLibxl", err)
	}
	var c *Context
	if _, err := c.Create(context.Background(), cfg); !errors.Is(err, ErrNoLibxl) {
		t.Fatalf("Create = %v, want ErrNoLibxl", err)
	}
	if !strings.Contains(XLConfig(cfg), `name = "work"`) {
		t.Fatalf("XLConfig without cgo:\n%s", XLConfig(cfg))
	}
}
