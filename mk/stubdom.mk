# The HVM device-model stubdomain (packages stubdom, stubdom/dmargs, qemu;
# commands cmd/stubdominit, stubdom/mkstubdom; verb qvm-block).
#
#   make stubdom-image  build/stubdom/: vmlinuz (Debian's kernel, from
#                       dom0-parts), initramfs (u-root: stubdominit as
#                       /init, Xen's QEMU with its libraries, keymap, option
#                       ROMs, vchan-socket-proxy, kernel modules; zstd) and
#                       stubdom-dom0.cpio, an archive to append to dom0's
#                       initramfs that puts both under /usr/lib/qvm/stubdom
#   make bench-hvm      in one nested-Xen run: qvm-start of an HVM with the
#                       stubdomain against xl create of the same guest with
#                       QEMU in dom0 (see bench/hvm)
#
# The e2e tests (e2e/stubdom_*_test.go) boot the nested Xen with the
# stubdomain archive and build a small bootable ISO (isolinux, xorriso,
# busybox) for the guest.

APT_PACKAGES += zstd qemu-system-xen xen-utils-4.17 seabios ipxe-qemu qemu-system-data \
	isolinux syslinux-common xorriso busybox-static cpio
TEST_PREREQS += stubdom-image

STUBDOM_DIR   := $(BUILD)/stubdom
STUBDOM_IMAGE := $(STUBDOM_DIR)/initramfs
STUBDOM_GO_SRCS := $(shell find cmd/stubdominit stubdom bootinit dhcpd xenstore -name '*.go' -not -name '*_test.go' 2>/dev/null) go.mod go.sum

.PHONY: stubdom-image bench-hvm
stubdom-image: dom0-parts $(STUBDOM_IMAGE)

$(STUBDOM_IMAGE): $(DOM0_PARTS) $(UROOT) $(STUBDOM_GO_SRCS) mk/stubdom.mk
	@mkdir -p $(STUBDOM_DIR)
	$(GO) run ./stubdom/mkstubdom -uroot $(UROOT) -kernel $(DOM0_DIR)/vmlinuz \
	  -kernel-root $(DOM0_PKGROOT) -kernel-version $$(cat $(DOM0_DIR)/kernel-version) -out $(STUBDOM_DIR)

# bench-hvm boots the nested Xen once and compares, for the same HVM guest
# booting a small ISO, qvm-start with qvm's stubdomain against xl create
# with Xen's QEMU in dom0; its last line is the summary.
bench-hvm: build dom0-image dom0-qemu-image stubdom-image
	$(GO) test -count=1 -timeout 40m -run '^TestBenchHVM$$' -v ./bench/hvm/ 2>&1 | tee $(BUILD)/bench-hvm.log | grep -v '^=== RUN\|^--- PASS\|^PASS\|^ok ' ; \
	  tail -n 1 $(BUILD)/bench-hvm.summary
