# Packages every build needs: the cgo toolchain is on the machine already;
# libxl and its JSON library are needed by package xl.
APT_PACKAGES += libxen-dev libyajl-dev
