// Package xl drives Xen's libxl (4.17) from Go: it turns a plain Go
// description of a domain (DomainConfig) into libxl's libxl_domain_config,
// renders it as libxl's own JSON and as xl.cfg text that `xl create`
// accepts, and runs the domain lifecycle (create, shutdown, destroy,
// pause, list, CD-ROM and PCI hotplug, waiting for a domain's death)
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
// Xen dom0 and run only when QVM_TEST_XEN=1 is set (the nested-Xen test bed
// sets it); without it they are skipped and are not counted as a missing
// prerequisite, because a hypervisor cannot be installed by `make deps`.
package xl
