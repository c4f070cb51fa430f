// Package bootinit holds the steps a Go program takes when it runs as pid 1
// of one of the project's initramfs images (the dom0 image's init, the guest
// image's init, the stubdomain's init): mounting the kernel's file systems,
// loading kernel modules with their dependencies, starting and reaping
// child processes, reading the kernel command line and powering off.
//
// Every step returns an error naming what failed, so an init can print it and
// power off instead of hanging.
package bootinit
