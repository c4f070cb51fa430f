# guestdisk: dom0 keeps out of the disks it serves to VMs (package guestdisk).
#
#   make install-guest-disks   (part of `make install`) the udev rules into
#                              $(DESTDIR)$(UDEV_RULES_DIR), made for
#                              QVM_STATE_DIRS, and the LVM filter into
#                              $(DESTDIR)$(PREFIX)/share/qvm (see README: it
#                              goes into /etc/lvm/lvmlocal.conf by hand)
#
# QVM_STATE_DIRS: the state directories whose files are VM disks, as real
# paths (no symbolic links), space-separated, none of *?[]|"\#& in them.
# qvm also marks every file it attaches, wherever it is, so this only
# matters for loop devices others make of VM images.
#
# The tests run a real systemd-udevd (udev) under strace, make an ext4 image
# (e2fsprogs), attach it with losetup and enter udevd's mount namespace
# (util-linux, mount), and check the LVM filter with lvm2.
APT_PACKAGES += udev strace e2fsprogs util-linux mount lvm2

QVM_STATE_DIRS ?= /var/lib/qvm
# udevd reads $(PREFIX)/lib/udev/rules.d for PREFIX /usr/local and /usr.
UDEV_RULES_DIR ?= $(PREFIX)/lib/udev/rules.d

guestdisk_empty :=
guestdisk_space := $(guestdisk_empty) $(guestdisk_empty)
guestdisk_dirs  := $(strip $(QVM_STATE_DIRS))
guestdisk_globs := $(subst $(guestdisk_space),|,$(addsuffix /*,$(guestdisk_dirs)))

.PHONY: install-guest-disks
install: install-guest-disks
install-guest-disks:
	@case "$(guestdisk_dirs)" in "") echo "QVM_STATE_DIRS is empty" >&2; exit 1;; *[][*?\|\"\\#\&]*) echo "QVM_STATE_DIRS: no *?[]|\"\\#& in it" >&2; exit 1;; esac
	@for d in $(guestdisk_dirs); do case $$d in */) echo "QVM_STATE_DIRS: $$d: drop the trailing /" >&2; exit 1;; /?*) ;; *) echo "QVM_STATE_DIRS: $$d is not an absolute path other than /" >&2; exit 1;; esac; done
	install -d $(DESTDIR)$(UDEV_RULES_DIR) $(DESTDIR)$(PREFIX)/share/qvm
	sed -e 's#@QVM_STATE_DIRS@#$(guestdisk_dirs)#g' -e 's#@QVM_STATE_GLOBS@#$(guestdisk_globs)#g' \
	  guestdisk/59-qvm-guest-disks.rules.in > $(DESTDIR)$(UDEV_RULES_DIR)/.59-qvm-guest-disks.rules.tmp
	chmod 0644 $(DESTDIR)$(UDEV_RULES_DIR)/.59-qvm-guest-disks.rules.tmp
	mv $(DESTDIR)$(UDEV_RULES_DIR)/.59-qvm-guest-disks.rules.tmp $(DESTDIR)$(UDEV_RULES_DIR)/59-qvm-guest-disks.rules
	install -m 0644 guestdisk/lvm-guest-disks.conf $(DESTDIR)$(PREFIX)/share/qvm/lvm-guest-disks.conf
