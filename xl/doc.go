// Package xl drives Xen's libxl (4.17) from Go: it turns a plain Go
// description of a domain (DomainConfig) into libxl's libxl_domain_config,
// renders it as libxl's own JSON and as xl.cfg text that `xl create`
// accepts, and runs the domain lifecycle (create, shutdown, destroy,
// pause, list, CD-ROM media change, waiting for a domain's death)
// through libxl with its log routed to log/slog.
//
// The package knows Xen and libxl, nothing about the VMs a toolstack
// manages on top of it: mapping a VM definition to a DomainConfig is the
// caller's job.
//
// Units are in the field names: memory is in MiB (MemoryMiB, ...) as in
// xl.cfg; libxl's KiB fields are derived from them.
//
// It is the only package of qvm that uses cgo. Built with CGO_ENABLED=0 the
// types, Validate and XLConfig still work, and everything that needs libxl
// (JSON, Open and the lifecycle) returns ErrNoLibxl.
//
// # Tests
//
// The marshalling tests need no hypervisor: libxl's JSON generator and
// libxlutil's xl.cfg parser run without one. The lifecycle tests need a real
// Xen dom0: TestXen boots the nested-Xen test bed (package e2e/xenvm) and
// runs them in its dom0, as part of `go test ./...`.
package xl
