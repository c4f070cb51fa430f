# The definition store and CLI (issue: qvm foundation).
# The crash-consistency test (store/crash_test.go, internal/crashdisk) makes
# and checks ext4 file systems; it also needs the kernel's FUSE and loop.
APT_PACKAGES += e2fsprogs
.PHONY: bench-store
# bench-store: qvm-ls -n over 1,000 VMs and one qvm-prefs get (real binary),
# then our clone against cp of a 10 GiB sparse image with 200 MiB of data on
# a filesystem without reflink (bench/clone, root: it makes a loop device).
bench-store: deps build
	@line=$$($(GO) run ./bench/clone | tee /dev/stderr | tail -n 1) && \
	$(GO) run ./bench/store -qvm $(BIN)/qvm -clone-line "$$line"
