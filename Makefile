# qvm: a Xen toolstack for dom0.
#
#   make build     bin/qvm and its bin/qvm-* links, bin/qvm-hotplug,
#                  bin/qvm-stubdom-dm, bin/qrexec-agent (for VMs)
#                  (installs only what compiling needs: BUILD_APT_PACKAGES)
#   make check     the fast local loop: gofmt, vet, staticcheck and the tests
#                  that need no nested Xen (go test -short: the test-bed tests
#                  skip; nothing is installed but what compiling needs)
#   make test      every test, the nested-Xen ones included (installs what
#                  the tests need first; CI runs this)
#   make demo      the main job (see README)
#   make install   into $(DESTDIR)$(PREFIX)/bin, with the libxl hotplug links
#                  and dom0's udev rules for VM disks (mk/guestdisk.mk)
#
# Each area of the project adds to the variables below from its own mk/*.mk
# fragment: Debian packages compiling needs (BUILD_APT_PACKAGES) and those
# its tests, images and benchmarks need (APT_PACKAGES), files that must be
# built before `go test` (TEST_PREREQS), and its own bench-* targets.

GO       ?= go
PREFIX   ?= /usr/local
DESTDIR  ?=
BIN      := bin
BUILD    := build
GOFLAGS_BUILD ?= -trimpath
TEST_TIMEOUT ?= 55m

BUILD_APT_PACKAGES :=
APT_PACKAGES :=
TEST_PREREQS :=

# go_srcs lists the files of the packages $(1) and of every package of this
# module they import (go list -deps: Go, cgo and assembly sources, embedded
# files): what an image holding those programs is built from, so that a
# change to any of them rebuilds it.
go_srcs = $(shell $(GO) list -e -deps -f '{{with .Module}}{{if .Main}}{{range $$.GoFiles}}{{$$.Dir}}/{{.}} {{end}}{{range $$.CgoFiles}}{{$$.Dir}}/{{.}} {{end}}{{range $$.CFiles}}{{$$.Dir}}/{{.}} {{end}}{{range $$.HFiles}}{{$$.Dir}}/{{.}} {{end}}{{range $$.SFiles}}{{$$.Dir}}/{{.}} {{end}}{{range $$.EmbedFiles}}{{$$.Dir}}/{{.}} {{end}}{{end}}{{end}}' $(1))

.PHONY: all build install test check deps build-deps demo clean vet fmt-check lint
all: build

-include mk/*.mk

# apt_install installs the Debian packages $(1) that are missing. It only
# runs apt-get when one of them is missing, so it is cheap to depend on.
define apt_install
	@missing=""; for p in $(sort $(1)); do \
	  dpkg-query -W -f='$${Status}\n' $$p 2>/dev/null | grep -q '^install ok installed' || missing="$$missing $$p"; \
	done; \
	if [ -n "$$missing" ]; then \
	  echo "$@: installing$$missing"; \
	  if [ "$$(id -u)" != 0 ]; then echo "$@: need root to apt-get install$$missing" >&2; exit 1; fi; \
	  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends $$missing; \
	fi
endef

# build-deps installs what compiling qvm needs; deps also what the tests,
# the images, the demo and the benchmarks need.
build-deps:
	$(call apt_install,$(BUILD_APT_PACKAGES))
deps:
	$(call apt_install,$(BUILD_APT_PACKAGES) $(APT_PACKAGES))

build: build-deps
	@mkdir -p $(BIN)
	$(GO) build $(GOFLAGS_BUILD) -o $(BIN)/qvm ./cmd/qvm
	@for l in $$($(BIN)/qvm --list-links); do ln -sf qvm $(BIN)/$$l; done
	CGO_ENABLED=0 $(GO) build $(GOFLAGS_BUILD) -ldflags='-s -w' -o $(BIN)/qvm-hotplug ./cmd/qvm-hotplug
	CGO_ENABLED=0 $(GO) build $(GOFLAGS_BUILD) -ldflags='-s -w' -o $(BIN)/qvm-stubdom-dm ./cmd/qvm-stubdom-dm
	CGO_ENABLED=0 $(GO) build $(GOFLAGS_BUILD) -ldflags='-s -w' -o $(BIN)/qrexec-agent ./cmd/qrexec-agent

# qvm-hotplug, libxl's hotplug scripts, is a static binary of its own (one
# exec per device on every start): linked from /etc/xen/scripts.
# qvm-stubdom-dm, what libxl runs in dom0 for an HVM's stubdomain
# instead of QEMU, sits beside qvm, where qvm looks for it.
# qrexec-agent is for VMs (copy it into each), not installed in dom0.
install: build
	install -d $(DESTDIR)$(PREFIX)/bin
	install -m 0755 $(BIN)/qvm $(DESTDIR)$(PREFIX)/bin/qvm
	install -m 0755 $(BIN)/qvm-hotplug $(DESTDIR)$(PREFIX)/bin/qvm-hotplug
	install -m 0755 $(BIN)/qvm-stubdom-dm $(DESTDIR)$(PREFIX)/bin/qvm-stubdom-dm
	@for l in $$($(BIN)/qvm --list-links); do ln -sf qvm $(DESTDIR)$(PREFIX)/bin/$$l; done
	@for l in $$($(BIN)/qvm-hotplug --list-links); do \
	  install -d $(DESTDIR)$$(dirname $$l); ln -sf $(PREFIX)/bin/qvm-hotplug $(DESTDIR)$$l; done

vet:
	$(GO) vet ./...

# lint: staticcheck (unused code, ignored errors, bugs vet does not see).
STATICCHECK ?= honnef.co/go/tools/cmd/staticcheck@v0.8.2
lint:
	$(GO) run $(STATICCHECK) ./...

fmt-check:
	@out=$$(gofmt -l $$(git ls-files '*.go')); if [ -n "$$out" ]; then echo "not gofmt-formatted:"; echo "$$out"; exit 1; fi

# QVM_TEST_STRICT=1: a test whose real part is missing fails instead of
# skipping, and so does a test-bed test run with -short.
test: deps build $(TEST_PREREQS) fmt-check vet lint
	QVM_TEST_STRICT=1 QVM_BIN=$(CURDIR)/$(BIN)/qvm $(GO) test -count=1 -timeout $(TEST_TIMEOUT) ./...

# check: no nested Xen (-short makes the test-bed tests skip, which only
# works without QVM_TEST_STRICT) and nothing installed beyond what
# compiling needs: a test whose other prerequisites are missing skips.
check: build-deps fmt-check vet lint
	$(GO) test -short -count=1 ./...

clean:
	rm -rf $(BIN) $(BUILD)
