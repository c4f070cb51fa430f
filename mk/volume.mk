# volume: the file pool for VM disk images (package volume) and its
# clone benchmark. The tests make real filesystems on loop devices:
# XFS with and without reflink, btrfs, ext4 (filefrag, from e2fsprogs,
# shows shared extents); losetup and mount come from util-linux/mount.
APT_PACKAGES += xfsprogs btrfs-progs e2fsprogs util-linux mount coreutils
