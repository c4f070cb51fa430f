// Package e2e holds the end-to-end tests: each boots real Xen inside QEMU
// with the project's dom0 image (package e2e/xenvm) and checks what the
// toolstack does to real domains there.
//
// Build the images first (`make dom0-image guest-image`; `make test` does).
package e2e
