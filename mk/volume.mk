# volume: the file pool for VM disk images (package volume) and its clone
# benchmark. The tests make real filesystems on loop devices: XFS with and
# without reflink (xfsprogs), btrfs (btrfs-progs), ext4 and filefrag, which
# shows shared extents (e2fsprogs); losetup is in `mount`; the benchmark runs
# coreutils' cp as the peer.
APT_PACKAGES += xfsprogs btrfs-progs e2fsprogs mount coreutils

# bench-clone: volume.Copy (what qvm-clone does per image) against
# `cp --reflink=auto --sparse=always` (+ fsync) of a 10 GiB sparse image with
# 200 MiB of data on an ext4 loop device, after a report of reflink clone cost
# on XFS (200 MiB vs 2 GiB of data). Needs root. Last line:
#   clone Z ms cp W ms ratio W/Z
.PHONY: bench-clone
bench-clone: deps
	$(GO) run ./bench/clone -reflink-report
