# The HVM device-model stubdomain (packages stubdom, stubdom/image,
# stubdom/dmargs, qemu; commands cmd/stubdominit, stubdom/mkstubdom; verb
# qvm-block).
#
#   make stubdom-kernel build/stubdom/kernel/: a small Linux built from
#                       Debian's linux-source-6.1 with stubdom/kernel.config
#                       (all drivers built in; about 3 minutes on 2 cores).
#                       Debian's generic kernel reserves ~45 MiB of the
#                       stubdomain's memory, too much for 128 MiB.
#   make stubdom-image  build/stubdom/: vmlinux (that kernel, uncompressed and
#                       stripped: libxl loads it without the ~0.6 s a
#                       compressed bzImage costs under emulation), initramfs
#                       (u-root: stubdominit as /init, Xen's QEMU with its
#                       libraries, keymap, option ROMs, vchan-socket-proxy;
#                       zstd) and stubdom-dom0.cpio.gz, an archive to append
#                       to dom0's initramfs that puts both under
#                       /usr/lib/qvm/stubdom
#   make bench-hvm      in one nested-Xen run: qvm-start of an HVM with the
#                       stubdomain against xl create of the same guest with
#                       QEMU in dom0 (see bench/hvm)
#
# The e2e tests (e2e/stubdom_*_test.go) boot the nested Xen with the
# stubdomain archive and build a small bootable ISO (isolinux, xorriso,
# busybox) for the guest.

APT_PACKAGES += zstd qemu-system-xen xen-utils-4.17 seabios ipxe-qemu qemu-system-data \
	isolinux syslinux-common xorriso busybox-static cpio \
	linux-source-6.1 gcc make bc flex bison libelf-dev xz-utils
TEST_PREREQS += stubdom-image

STUBDOM_DIR    := $(BUILD)/stubdom
STUBDOM_IMAGE  := $(STUBDOM_DIR)/initramfs
STUBDOM_KSRC   := /usr/src/linux-source-6.1.tar.xz
STUBDOM_KTREE  := $(STUBDOM_DIR)/linux
STUBDOM_KOUT   := $(STUBDOM_DIR)/kernel
STUBDOM_KERNEL := $(STUBDOM_KOUT)/vmlinux
# The init and everything it links, and the builder, which decides what
# else the image holds (mkstubdom's other imports print, they do not build).
STUBDOM_GO_SRCS := $(call go_srcs,./cmd/stubdominit ./stubdom/image) $(wildcard stubdom/mkstubdom/*.go) go.mod go.sum

.PHONY: stubdom-kernel stubdom-image bench-hvm
stubdom-kernel: deps $(STUBDOM_KERNEL)
stubdom-image: deps $(STUBDOM_IMAGE)

# The kernel tree is unpacked afresh when the fragment changes; the build
# output lists the built-in "modules" (modules.builtin), which the init's
# module loader then knows need no loading.
$(STUBDOM_KERNEL): stubdom/kernel.config $(STUBDOM_KSRC)
	@start=$$(date +%s); set -e; \
	rm -rf $(STUBDOM_KTREE) $(STUBDOM_KOUT); mkdir -p $(STUBDOM_KTREE); \
	echo "stubdom-kernel: unpacking $(STUBDOM_KSRC)"; \
	tar -xJf $(STUBDOM_KSRC) -C $(STUBDOM_KTREE) --strip-components=1; \
	$(MAKE) -s -C $(STUBDOM_KTREE) KCONFIG_ALLCONFIG=$(abspath stubdom/kernel.config) allnoconfig; \
	echo "stubdom-kernel: building bzImage"; \
	$(MAKE) -s -C $(STUBDOM_KTREE) -j$$(nproc) bzImage; \
	kver=$$(cat $(STUBDOM_KTREE)/include/config/kernel.release); \
	mkdir -p $(STUBDOM_KOUT)/lib/modules/$$kver; \
	cp $(STUBDOM_KTREE)/modules.builtin $(STUBDOM_KOUT)/lib/modules/$$kver/; \
	: > $(STUBDOM_KOUT)/lib/modules/$$kver/modules.dep; \
	cp $(STUBDOM_KTREE)/.config $(STUBDOM_KOUT)/config; \
	echo $$kver > $(STUBDOM_KOUT)/kernel-version; \
	strip -o $@ $(STUBDOM_KTREE)/vmlinux; \
	echo "stubdom-kernel: $@ $$(stat -c %s $@) bytes, Linux $$kver, built in $$(( $$(date +%s) - start )) s"

$(STUBDOM_IMAGE): $(STUBDOM_KERNEL) $(UROOT) $(STUBDOM_GO_SRCS) mk/stubdom.mk
	@mkdir -p $(STUBDOM_DIR)
	$(GO) run ./stubdom/mkstubdom -uroot $(UROOT) -kernel $(STUBDOM_KERNEL) \
	  -kernel-config stubdom/kernel.config,$(STUBDOM_KOUT)/config \
	  -kernel-root $(STUBDOM_KOUT) -kernel-version $$(cat $(STUBDOM_KOUT)/kernel-version) -out $(STUBDOM_DIR)

# bench-hvm boots the nested Xen once and compares, for the same HVM guest
# booting a small ISO, qvm-start with qvm's stubdomain against xl create
# with Xen's QEMU in dom0 (bench/hvm); its last line is the summary.
bench-hvm: build dom0-image dom0-qemu-image guest-image stubdom-image
	@mkdir -p $(BUILD)
	@$(GO) test -tags benchhvm -count=1 -timeout 40m -run '^TestBenchHVM$$' -v ./bench/hvm/ > $(BUILD)/bench-hvm.log 2>&1; rc=$$?; \
	  if [ $$rc != 0 ]; then tail -n 60 $(BUILD)/bench-hvm.log; echo "bench-hvm: failed (full log: $(BUILD)/bench-hvm.log)"; exit $$rc; fi; \
	  grep -E '^(hvm-bench:|hvm:)' $(BUILD)/bench-hvm.log

# install-stubdom puts the stubdomain where qvm-start looks for it
# (/usr/lib/qvm/stubdom, or $QVM_STUBDOM_KERNEL / $QVM_STUBDOM_RAMDISK).
.PHONY: install-stubdom
install-stubdom: stubdom-image
	install -d $(DESTDIR)/usr/lib/qvm/stubdom
	install -m 0644 $(STUBDOM_KERNEL) $(DESTDIR)/usr/lib/qvm/stubdom/vmlinux
	install -m 0644 $(STUBDOM_IMAGE) $(DESTDIR)/usr/lib/qvm/stubdom/initramfs
