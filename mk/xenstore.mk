# xenstore: the pure-Go xenstore client and QubesDB-like key publishing,
# tested against Debian's real C xenstored. Without Xen, xenstored runs under
# LD_PRELOAD of a small library standing in for the hypervisor handles
# (xenstore/testdata/fakexen.c); the tests build it themselves when
# build/fakexen.so is missing.
#   xen-utils-4.17   /usr/lib/xen-4.17/bin/xenstored
#   xenstore-utils   xenstore-ls, xenstore-write (tests and bench compare)
#   libxen-dev, gcc  headers and compiler for fakexen.so
APT_PACKAGES += xen-utils-4.17 xenstore-utils libxen-dev gcc libc6-dev

FAKEXEN := $(BUILD)/fakexen.so
TEST_PREREQS += $(FAKEXEN)

# Same flags as xenstoretest.BuildCommand.
$(FAKEXEN): xenstore/testdata/fakexen.c
	@mkdir -p $(dir $@)
	gcc -O2 -Wall -shared -fPIC -o $@ $< -ldl

# bench-xenstore publishes one VM's key set against one private xenstored
# three ways (C xenstore-write per key, sequential Go writes, one Go
# transaction with its requests in flight together) and measures reads/s.
.PHONY: bench-xenstore
bench-xenstore: deps $(FAKEXEN)
	QVM_FAKEXEN=$(CURDIR)/$(FAKEXEN) $(GO) run ./bench/xenstore
