# Package xl: libxl through cgo.
#
# libxen-dev/libyajl-dev (base.mk, BUILD_APT_PACKAGES) for building; the
# tests also run the real `xl` (xen-utils-4.17) in dry-run mode, compile a
# small C stand-in for the hypervisor with gcc, and check for C memory leaks
# and double frees with AddressSanitizer/LeakSanitizer (libasan8, gcc's).
# TestXen runs the lifecycle tests in the nested-Xen test bed (dom0.mk's
# images and dom0-qemu-image) with a small disc made by xorriso.
APT_PACKAGES += xen-utils-4.17 gcc libc6-dev libasan8 xorriso

# Both run before `go test ./...` in `make test`.
TEST_PREREQS += xl-leakcheck xl-nocgo

XL_ASAN_TESTS := TestJSONMatrix|TestJSONRejectsInvalid|TestXLConfigLibxlutil|FuzzXLQuote

.PHONY: xl-leakcheck xl-nocgo
# xl-leakcheck runs the marshalling tests with -asan: at exit LeakSanitizer
# fails the run if any C memory the tests made (libxl configs, JSON
# strings, libxlutil parses) was not freed, and ASan aborts on a double
# free. It first proves the check works: a build that leaks on purpose
# (tag qvmleakcanary) must fail with a LeakSanitizer report.
xl-leakcheck: deps
	@mkdir -p $(BUILD)
	@echo "xl-leakcheck: the leak check must catch a deliberate leak"
	@if CC=gcc $(GO) test -asan -tags qvmleakcanary -count=1 -run '^TestLeakCanary$$' ./xl/ >$(BUILD)/xl-leakcanary.log 2>&1; then \
	  echo "xl-leakcheck: a deliberate C leak went unnoticed: the leak check does not work (see $(BUILD)/xl-leakcanary.log)"; exit 1; fi
	@grep -q 'LeakSanitizer: detected memory leaks' $(BUILD)/xl-leakcanary.log || \
	  { echo "xl-leakcheck: the canary failed without a LeakSanitizer report:"; cat $(BUILD)/xl-leakcanary.log; exit 1; }
	@echo "xl-leakcheck: marshalling tests under AddressSanitizer/LeakSanitizer"
	CC=gcc QVM_TEST_STRICT=1 $(GO) test -asan -count=1 -run '$(XL_ASAN_TESTS)' ./xl/

# xl-nocgo checks that a CGO_ENABLED=0 qvm still builds and that package xl
# then answers ErrNoLibxl.
xl-nocgo:
	CGO_ENABLED=0 $(GO) build -o /dev/null ./cmd/qvm
	CGO_ENABLED=0 QVM_TEST_STRICT=1 $(GO) test -count=1 ./xl/
