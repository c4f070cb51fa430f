# qvm: a Xen toolstack for dom0.
#
#   make build     bin/qvm and its bin/qvm-* links
#   make test      every test (installs what the tests need first; CI runs this)
#   make demo      the main job (see README)
#   make install   into $(DESTDIR)$(PREFIX)/bin
#
# Each area of the project adds to the variables below from its own mk/*.mk
# fragment: Debian packages it needs (APT_PACKAGES), files that must be built
# before `go test` (TEST_PREREQS), and its own bench-* targets.

GO       ?= go
PREFIX   ?= /usr/local
DESTDIR  ?=
BIN      := bin
BUILD    := build
GOFLAGS_BUILD ?= -trimpath
TEST_TIMEOUT ?= 55m

APT_PACKAGES :=
TEST_PREREQS :=

.PHONY: all build install test deps demo clean vet fmt-check lint
all: build

-include mk/*.mk

# deps installs the Debian packages the build and the tests need. It only runs
# apt-get when one of them is missing, so it is cheap to depend on.
deps:
	@missing=""; for p in $(sort $(APT_PACKAGES)); do \
	  dpkg-query -W -f='$${Status}\n' $$p 2>/dev/null | grep -q '^install ok installed' || missing="$$missing $$p"; \
	done; \
	if [ -n "$$missing" ]; then \
	  echo "deps: installing$$missing"; \
	  if [ "$$(id -u)" != 0 ]; then echo "deps: need root to apt-get install$$missing" >&2; exit 1; fi; \
	  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends $$missing; \
	fi

build: deps
	@mkdir -p $(BIN)
	$(GO) build $(GOFLAGS_BUILD) -o $(BIN)/qvm ./cmd/qvm
	@for l in $$($(BIN)/qvm --list-links); do case $$l in /*) ;; *) ln -sf qvm $(BIN)/$$l;; esac; done

install: build
	install -d $(DESTDIR)$(PREFIX)/bin
	install -m 0755 $(BIN)/qvm $(DESTDIR)$(PREFIX)/bin/qvm
	@for l in $$($(BIN)/qvm --list-links); do case $$l in \
	  /*) install -d $(DESTDIR)$$(dirname $$l); ln -sf $(PREFIX)/bin/qvm $(DESTDIR)$$l;; \
	  *) ln -sf qvm $(DESTDIR)$(PREFIX)/bin/$$l;; esac; done

vet:
	$(GO) vet ./...

# lint: staticcheck (unused code, ignored errors, bugs vet does not see).
STATICCHECK ?= honnef.co/go/tools/cmd/staticcheck@v0.8.2
lint:
	$(GO) run $(STATICCHECK) ./...

fmt-check:
	@out=$$(gofmt -l $$(git ls-files '*.go')); if [ -n "$$out" ]; then echo "not gofmt-formatted:"; echo "$$out"; exit 1; fi

# QVM_TEST_STRICT=1: a test whose real part is missing fails instead of skipping.
test: deps build $(TEST_PREREQS) fmt-check vet lint
	QVM_TEST_STRICT=1 QVM_BIN=$(CURDIR)/$(BIN)/qvm $(GO) test -count=1 -timeout $(TEST_TIMEOUT) ./...

clean:
	rm -rf $(BIN) $(BUILD)
