# make demo: the seed workflows with the real qvm commands, in real Xen
# booted inside QEMU (see cmd/demo). Ends with `demo: N/M steps passed`.
.PHONY: demo
demo: dom0-image guest-image dom0-qemu-image stubdom-image
	@$(GO) build -o $(BIN)/demo ./cmd/demo
	@$(BIN)/demo

# bench-start: qvm-start against xl create of the same domain, in the nested
# Xen, with 0 and 8 other domains running (see bench/start).
.PHONY: bench-start
bench-start: dom0-image guest-image
	@$(GO) build -o $(BUILD)/bench-start ./bench/start
	@$(BUILD)/bench-start

# bench-parallel: 8 qvm-starts at once against 8 xl creates at once of the
# same domains, and the 8 qvm-starts one after another, in the nested Xen
# (see bench/parallel).
.PHONY: bench-parallel
bench-parallel: dom0-image guest-image
	@$(GO) build -o $(BUILD)/bench-parallel ./bench/parallel
	@$(BUILD)/bench-parallel

# bench-footprint: dom0 processes and resident memory per running VM with 8
# VMs, qvm-start against xl create of the same domains, in the nested Xen
# (see bench/footprint).
.PHONY: bench-footprint
bench-footprint: dom0-image guest-image
	@$(GO) build -o $(BUILD)/bench-footprint ./bench/footprint
	@$(BUILD)/bench-footprint

# bench-qrexec: the same MiB out of a guest with qvm-run --pass-io and over
# TCP across its vif, and qvm-run VM true round trips, in the nested Xen
# (see bench/qrexec).
.PHONY: bench-qrexec
bench-qrexec: dom0-image guest-image
	@$(GO) build -o $(BUILD)/bench-qrexec ./bench/qrexec
	@$(BUILD)/bench-qrexec
