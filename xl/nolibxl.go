//go:build !cgo

package xl

import (
	"context"
	"log/slog"
	"time"
)

// This file stands in for the libxl bindings in a CGO_ENABLED=0 build:
// the same API, every call returning ErrNoLibxl.

// JSON needs libxl's JSON generator: ErrNoLibxl (after validating cfg).
func JSON(cfg *DomainConfig) (string, error) {
	if err := cfg.Validate(); err != nil {
		return "", err
	}
	return "", ErrNoLibxl
}

// Context would be an open libxl context; this build has none.
type Context struct{}

// Open returns ErrNoLibxl.
func Open(ctx context.Context, logger *slog.Logger) (*Context, error) { return nil, ErrNoLibxl }

// Close returns ErrNoLibxl.
func (c *Context) Close() error { return ErrNoLibxl }

// Create returns ErrNoLibxl.
func (c *Context) Create(ctx context.Context, cfg *DomainConfig) (uint32, error) {
	return 0, ErrNoLibxl
}

// CreatePaused returns ErrNoLibxl.
func (c *Context) CreatePaused(ctx context.Context, cfg *DomainConfig) (uint32, error) {
	return 0, ErrNoLibxl
}

// RequestShutdown returns ErrNoLibxl.
func (c *Context) RequestShutdown(ctx context.Context, domid uint32) error { return ErrNoLibxl }

// Destroy returns ErrNoLibxl.
func (c *Context) Destroy(ctx context.Context, domid uint32) error { return ErrNoLibxl }

// SetBeforeDestroy does nothing without libxl.
func (c *Context) SetBeforeDestroy(f func(domids []uint32)) {}

// Pause returns ErrNoLibxl.
func (c *Context) Pause(ctx context.Context, domid uint32) error { return ErrNoLibxl }

// Unpause returns ErrNoLibxl.
func (c *Context) Unpause(ctx context.Context, domid uint32) error { return ErrNoLibxl }

// DomainInfo returns ErrNoLibxl.
func (c *Context) DomainInfo(ctx context.Context, domid uint32) (DomainInfo, error) {
	return DomainInfo{}, ErrNoLibxl
}

// DomainID returns ErrNoLibxl.
func (c *Context) DomainID(ctx context.Context, name string) (uint32, error) { return 0, ErrNoLibxl }

// List returns ErrNoLibxl.
func (c *Context) List(ctx context.Context) ([]DomainInfo, error) { return nil, ErrNoLibxl }

// PhysInfo returns ErrNoLibxl.
func (c *Context) PhysInfo(ctx context.Context) (PhysInfo, error) { return PhysInfo{}, ErrNoLibxl }

// CheckType returns ErrNoLibxl.
func (c *Context) CheckType(ctx context.Context, t DomainType) error { return ErrNoLibxl }

// CDROMInsert returns ErrNoLibxl.
func (c *Context) CDROMInsert(ctx context.Context, domid uint32, vdev, target string) error {
	return ErrNoLibxl
}

// CDROMEject returns ErrNoLibxl.
func (c *Context) CDROMEject(ctx context.Context, domid uint32, vdev string) error {
	return ErrNoLibxl
}

// WaitDeath returns ErrNoLibxl.
func (c *Context) WaitDeath(ctx context.Context, domid uint32) (ShutdownReason, error) {
	return "", ErrNoLibxl
}

// Shutdown returns ErrNoLibxl.
func (c *Context) Shutdown(ctx context.Context, domid uint32, timeout time.Duration) (bool, error) {
	return false, ErrNoLibxl
}
