package xl

import (
	"errors"
	"fmt"
)

// ErrNoLibxl is returned by everything that needs libxl in a qvm built
// with CGO_ENABLED=0.
var ErrNoLibxl = errors.New("this qvm was built without libxl (CGO_ENABLED=0): rebuild with cgo and libxen-dev to start VMs")

// ErrNoDomain is returned (wrapped) when a domain does not exist.
var ErrNoDomain = errors.New("no such domain")

// ErrStrictReset is returned (wrapped) when a PCI device without a reset
// method is assigned without PCIDevice.NoStrictReset.
var ErrStrictReset = errors.New("PCI device has no reset method")

// Error is a failed libxl call.
type Error struct {
	Op     string // the libxl function, e.g. "libxl_domain_create_new"
	Domain uint32 // the domain it concerned, if any
	HasDom bool   // whether Domain is meaningful
	Code   int    // libxl's ERROR_* code (negative)
	Name   string // the code's name, e.g. "FAIL"
}

func (e *Error) Error() string {
	name := e.Name
	if name == "" {
		name = "unknown error"
	}
	if e.HasDom {
		return fmt.Sprintf("%s (domain %d): libxl error %s (%d)", e.Op, e.Domain, name, e.Code)
	}
	return fmt.Sprintf("%s: libxl error %s (%d)", e.Op, name, e.Code)
}

// Is makes errors.Is(err, ErrNoDomain) true for libxl's DOMAIN_NOTFOUND.
func (e *Error) Is(target error) bool {
	return target == ErrNoDomain && e.Code == errDomainNotFound
}

// libxl error codes this package looks at.
const (
	errFail           = -3
	errNoParavirt     = -10
	errDomainNotFound = -21
)
