# What compiling qvm needs: package xl (cgo) links libxl and its JSON
# library, with gcc and the C library's headers.
BUILD_APT_PACKAGES += libxen-dev libyajl-dev gcc libc6-dev
