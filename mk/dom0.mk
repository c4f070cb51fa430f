# The end-to-end test bed: real Xen booted in QEMU (TCG) with a dom0 built
# by this project.
#
#   make dom0-parts   Xen (multiboot ELF) and the Debian dom0/guest kernel with
#                     the modules dom0 loads, from Debian packages, under
#                     build/dom0/ (apt-get download + dpkg-deb -x; nothing is
#                     installed into the host's /boot; .debs cached there)
#   make dom0-image   build/dom0/dom0.cpio.gz: u-root core commands, dom0init
#                     as /init, qvm and qvm-hotplug, and Xen's userspace from the host's
#                     xen-utils-4.17 (the same libxl that qvm links)
#   make dom0-qemu-image
#                     build/dom0/dom0-qemu.cpio.gz: Xen's device model QEMU
#                     (qemu-system-xen), hvmloader, SeaBIOS, the option ROMs
#                     and keymap it needs, as an archive to append to the
#                     dom0 image (xenvm.Config.ExtraInitrds) for HVM guests
#   make dom0-shell   boot the bed with a shell in dom0 on this terminal
#                     (exit the shell to power off; Ctrl-a x quits QEMU)
#   make guest-image  build/dom0/guest.cpio.gz: a tiny u-root guest whose init
#                     (cmd/guestinit) prints a marker and powers off or
#                     waits to be shut down
#
# The e2e tests (package e2e) boot these with the harness in e2e/xenvm.

APT_PACKAGES += qemu-system-x86 xen-utils-4.17 xenstore-utils qemu-system-xen busybox-static \
	seabios ipxe-qemu qemu-system-data kmod cpio gzip
TEST_PREREQS += dom0-image guest-image dom0-qemu-image

DOM0_DIR      := $(BUILD)/dom0
DOM0_DEBS     := $(DOM0_DIR)/debs
DOM0_PKGROOT  := $(DOM0_DIR)/pkgroot
DOM0_MODROOT  := $(DOM0_DIR)/modroot
DOM0_STAGE    := $(DOM0_DIR)/stage
DOM0_PARTS    := $(DOM0_DIR)/.parts
DOM0_IMAGE    := $(DOM0_DIR)/dom0.cpio.gz
GUEST_IMAGE   := $(DOM0_DIR)/guest.cpio.gz
DOM0_QEMU_IMAGE := $(DOM0_DIR)/dom0-qemu.cpio.gz
UROOT_VERSION := v0.16.0
UROOT         := $(BUILD)/tools/u-root-$(UROOT_VERSION)

# Kernel modules dom0 loads (dom0init's list) and those the host share needs;
# their dependencies come along. nf_tables and nft_ct (with nf_conntrack)
# carry the filter on VM interfaces (package vmfirewall); crc32c_generic is
# libcrc32c's soft dependency, which modules.dep does not list.
DOM0_KMODS := xen-evtchn xen-privcmd xen-gntdev xen-gntalloc xenfs xen-blkback \
	xen-netback loop bridge tun virtio_pci 9pnet_virtio 9p xen-netfront \
	crc32c_generic nf_tables nft_ct

# Xen userspace in dom0, from the host's packages (u-root adds their shared
# libraries). HOST:IMAGE pairs. libgcc_s is dlopened by glibc for
# pthread_cancel, which xl uses: ldd cannot see it.
XEN_LIBEXEC := /usr/lib/xen-4.17/bin
DOM0_XEN_FILES := \
	$(foreach f,xl xenstored xenconsoled xenconsole xen-init-dom0 libxl-save-helper vchan-socket-proxy xenstore-control,$(XEN_LIBEXEC)/$(f):$(XEN_LIBEXEC:/%=%)/$(f)) \
	$(XEN_LIBEXEC)/vchan-socket-proxy:usr/bin/vchan-socket-proxy \
	/lib/x86_64-linux-gnu/libgcc_s.so.1:lib/x86_64-linux-gnu/libgcc_s.so.1 \
	$(foreach f,xenstore xenstore-read xenstore-write xenstore-ls xenstore-list xenstore-rm xenstore-exists xenstore-watch xenstore-chmod,/usr/bin/$(f):usr/bin/$(f))

# The HVM device model and the firmware it loads, for dom0-qemu.cpio.gz.
DOM0_QEMU_FILES := /usr/libexec/xen-qemu-system-i386 /usr/lib/xen-4.17/boot/hvmloader \
	/usr/share/seabios /usr/share/qemu/keymaps/en-us /usr/share/qemu/linuxboot.bin /usr/share/qemu/linuxboot_dma.bin \
	/usr/lib/ipxe/qemu/efi-rtl8139.rom /usr/lib/ipxe/qemu/efi-e1000.rom

DOM0_GO_SRCS := $(call go_srcs,./cmd/dom0init) go.mod go.sum
GUEST_GO_SRCS := $(call go_srcs,./cmd/guestinit) $(call go_srcs,./cmd/qrexec-agent) go.mod go.sum

.PHONY: dom0-parts dom0-image guest-image dom0-qemu-image dom0-shell dom0-clean FORCE
dom0-parts: deps $(DOM0_PARTS)
dom0-image: dom0-parts build $(DOM0_IMAGE)
guest-image: dom0-parts $(GUEST_IMAGE)
dom0-qemu-image: deps $(DOM0_QEMU_IMAGE)

$(UROOT):
	@mkdir -p $(@D)
	GOBIN=$(abspath $(@D)) $(GO) install github.com/u-root/u-root@$(UROOT_VERSION)
	mv $(@D)/u-root $@

# Fetch and unpack the Debian parts: xen-hypervisor-4.17-amd64 and the
# kernel package that linux-image-amd64 depends on today
# (linux-image-6.1.0-N-amd64); apt picks the versions. The .debs stay in $(DOM0_DEBS), so a
# re-run downloads nothing unless apt's candidate versions changed.
$(DOM0_PARTS): mk/dom0.mk
	@set -e; mkdir -p $(DOM0_DEBS); \
	resolve() { \
	  kpkg=$$(apt-cache depends linux-image-amd64 2>/dev/null | awk '/Depends: linux-image-/{print $$2; exit}'); \
	  uris=$$(apt-get download --print-uris xen-hypervisor-4.17-amd64 $$kpkg 2>/dev/null) || uris=""; \
	}; \
	resolve; \
	if [ -z "$$kpkg" ] || [ -z "$$uris" ]; then echo "dom0-parts: apt knows no kernel/Xen package yet; running apt-get update"; apt-get update -qq; resolve; fi; \
	if [ -z "$$kpkg" ]; then echo "dom0-parts: cannot resolve linux-image-amd64 (is Debian's main archive in apt's sources?)" >&2; exit 1; fi; \
	debs=$$(printf '%s\n' "$$uris" | awk '{print $$2}'); \
	for d in $$debs; do \
	  if [ ! -s $(DOM0_DEBS)/$$d ]; then \
	    echo "dom0-parts: downloading $$d"; \
	    (cd $(DOM0_DEBS) && apt-get download -q -o APT::Sandbox::User=root $$(echo $$d | cut -d_ -f1)); \
	  fi; \
	done; \
	for f in $(DOM0_DEBS)/*.deb; do \
	  case " $$(echo $$debs) " in *" $$(basename $$f) "*) ;; *) echo "dom0-parts: dropping old $$(basename $$f)"; rm -f $$f;; esac; \
	done; \
	rm -rf $(DOM0_PKGROOT) $(DOM0_MODROOT); mkdir -p $(DOM0_PKGROOT); \
	for d in $$debs; do echo "dom0-parts: unpacking $$d"; dpkg-deb -x $(DOM0_DEBS)/$$d $(DOM0_PKGROOT); done; \
	gunzip -c $(DOM0_PKGROOT)/boot/xen-4.17-amd64.gz > $(DOM0_DIR)/xen; \
	cp $(DOM0_PKGROOT)/boot/vmlinuz-* $(DOM0_DIR)/vmlinuz; \
	kver=$$(ls $(DOM0_PKGROOT)/lib/modules); \
	depmod -b $(DOM0_PKGROOT) $$kver; \
	mdir=lib/modules/$$kver; mkdir -p $(DOM0_MODROOT)/$$mdir; \
	for m in $(DOM0_KMODS); do \
	  modprobe -d $(DOM0_PKGROOT) -S $$kver --show-depends $$m | awk '$$1=="insmod"{print $$2}'; \
	done | sort -u | while read ko; do \
	  rel=$${ko#$(abspath $(DOM0_PKGROOT))/}; mkdir -p $(DOM0_MODROOT)/$$(dirname $$rel); cp $$ko $(DOM0_MODROOT)/$$rel; \
	done; \
	cp $(DOM0_PKGROOT)/$$mdir/modules.order $(DOM0_PKGROOT)/$$mdir/modules.builtin* $(DOM0_MODROOT)/$$mdir/; \
	depmod -b $(DOM0_MODROOT) $$kver; \
	(cd $(DOM0_MODROOT)/$$mdir && rm -f modules.*.bin modules.order modules.alias modules.symbols modules.builtin.modinfo modules.devname modules.softdep); \
	echo $$kver > $(DOM0_DIR)/kernel-version; \
	echo "dom0-parts: Xen $$(dpkg-deb -f $(DOM0_DEBS)/xen-hypervisor-4.17-amd64_*.deb Version | tail -1), kernel $$kver, $$(find $(DOM0_MODROOT) -name '*.ko' | wc -l) modules"; \
	touch $@

# qvm, qvm-hotplug and qvm-stubdom-dm are copied only when they
# changed, so a rebuilt but identical binary does not rebuild the image.
$(DOM0_STAGE)/qvm $(DOM0_STAGE)/qvm-hotplug $(DOM0_STAGE)/qvm-stubdom-dm: FORCE
	@mkdir -p $(@D)
	@if [ ! -x $(BIN)/$(@F) ]; then echo "dom0-image: $(BIN)/$(@F) missing: run make build" >&2; exit 1; fi
	@cmp -s $(BIN)/$(@F) $@ || cp $(BIN)/$(@F) $@

$(DOM0_IMAGE): $(DOM0_PARTS) $(UROOT) $(DOM0_STAGE)/qvm $(DOM0_STAGE)/qvm-hotplug $(DOM0_STAGE)/qvm-stubdom-dm $(DOM0_GO_SRCS)
	@start=$$(date +%s.%N); set -e; \
	kver=$$(cat $(DOM0_DIR)/kernel-version); \
	$(UROOT) -o $(DOM0_DIR)/dom0.cpio -initcmd=dom0init -defaultsh=gosh \
	  -files $(DOM0_MODROOT)/lib/modules/$$kver:lib/modules/$$kver \
	  -files $(DOM0_STAGE)/qvm:bin/qvm \
	  -files $(DOM0_STAGE)/qvm-hotplug:bin/qvm-hotplug \
	  -files $(DOM0_STAGE)/qvm-stubdom-dm:bin/qvm-stubdom-dm \
	  $(foreach f,$(DOM0_XEN_FILES),-files $(f)) \
	  'github.com/u-root/u-root/cmds/core/*' ./cmd/dom0init; \
	gzip -9 -n -f $(DOM0_DIR)/dom0.cpio; \
	end=$$(date +%s.%N); \
	echo "dom0-image: $@ $$(du -h --apparent-size $@ | cut -f1) ($$(stat -c %s $@) bytes), built in $$(echo "$$start $$end" | awk '{printf "%.1f", $$2-$$1}') s"

# The guest gets the same modules directory: it loads xen-netfront from it.
$(GUEST_IMAGE): $(DOM0_PARTS) $(UROOT) $(GUEST_GO_SRCS)
	@start=$$(date +%s.%N); set -e; mkdir -p $(@D); \
	kver=$$(cat $(DOM0_DIR)/kernel-version); \
	$(UROOT) -o $(DOM0_DIR)/guest.cpio -initcmd=guestinit -defaultsh= \
	  -files $(DOM0_MODROOT)/lib/modules/$$kver:lib/modules/$$kver \
	  -files /bin/busybox:bin/busybox \
	  ./cmd/guestinit ./cmd/qrexec-agent github.com/u-root/u-root/cmds/core/poweroff; \
	gzip -9 -n -f $(DOM0_DIR)/guest.cpio; \
	end=$$(date +%s.%N); \
	echo "guest-image: $@ $$(stat -c %s $@) bytes, built in $$(echo "$$start $$end" | awk '{printf "%.1f", $$2-$$1}') s"

$(DOM0_QEMU_IMAGE): $(UROOT) mk/dom0.mk
	@start=$$(date +%s.%N); set -e; mkdir -p $(@D); \
	$(UROOT) -o $(DOM0_DIR)/dom0-qemu.cpio -nocmd -base=/dev/null -initcmd= -uinitcmd= -defaultsh= \
	  $(foreach f,$(DOM0_QEMU_FILES),-files $(f):$(f:/%=%)); \
	gzip -9 -n -f $(DOM0_DIR)/dom0-qemu.cpio; \
	end=$$(date +%s.%N); \
	echo "dom0-qemu-image: $@ $$(stat -c %s $@) bytes, built in $$(echo "$$start $$end" | awk '{printf "%.1f", $$2-$$1}') s"

# The same machine as e2e/xenvm, interactive. DOM0_SHELL_HVM=0 boots a CPU
# without SVM/NPT (no HVM).
comma := ,
DOM0_SHELL_CPU := $(if $(filter 0,$(DOM0_SHELL_HVM)),qemu64$(comma)-svm,qemu64$(comma)+svm$(comma)+npt)
dom0-shell: dom0-image guest-image dom0-qemu-image
	cat $(DOM0_IMAGE) $(DOM0_QEMU_IMAGE) > $(DOM0_DIR)/shell-initrd.cpio.gz
	qemu-system-x86_64 -nographic -no-reboot -m 3072 -smp 2 -cpu $(DOM0_SHELL_CPU) -nic none \
	  -kernel $(DOM0_DIR)/xen -append "console=com1 com1=115200,8n1 dom0_mem=1024M,max:1024M loglvl=all guest_loglvl=all" \
	  -initrd "$(DOM0_DIR)/vmlinuz console=hvc0 earlyprintk=xen quiet qvm.run=shell qvm.share=qvmhost,$(DOM0_DIR)/shell-initrd.cpio.gz" \
	  -virtfs local,path=$(abspath $(DOM0_DIR)),mount_tag=qvmhost,security_model=none,readonly=on,id=qvmhost \
	  -serial mon:stdio -monitor none -display none

FORCE:

dom0-clean:
	rm -rf $(DOM0_DIR)
