# make demo: the seed workflows with the real qvm commands, in real Xen
# booted inside QEMU (see cmd/demo). Ends with `demo: N/M steps passed`.
.PHONY: demo
demo: dom0-image guest-image
	@$(GO) build -o $(BIN)/demo ./cmd/demo
	@$(BIN)/demo
