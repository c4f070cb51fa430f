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
