# cli: the qvm-* commands' extras (cmd/qvm).
#
# qvm-pci names devices from the PCI id database (pci.ids); its test
# compares the names with lspci's (pciutils). The completion tests run
# bash's completion functions (bash-completion); the man pages are
# checked with man and groff (man-db, groff-base).
APT_PACKAGES += pci.ids pciutils bash-completion man-db groff-base

# make install also writes, for qvm and each qvm-* command, the bash
# completion (one script, linked under each name, as bash-completion loads
# them by command name) and the man page; both come from the qvm binary
# (qvm --completion bash, qvm --man NAME), made from the verbs' own flag
# definitions. CLI_QVM: the binary to ask (default: build bin/qvm).
MANDIR ?= $(PREFIX)/share/man
BASH_COMPLETION_DIR ?= /usr/share/bash-completion/completions
CLI_QVM ?=
cli_qvm := $(if $(CLI_QVM),$(CLI_QVM),$(BIN)/qvm)

.PHONY: install-cli-docs
install: install-cli-docs
install-cli-docs: | $(if $(CLI_QVM),,build)
	install -d $(DESTDIR)$(BASH_COMPLETION_DIR) $(DESTDIR)$(MANDIR)/man1
	$(cli_qvm) --completion bash > $(DESTDIR)$(BASH_COMPLETION_DIR)/.qvm.tmp
	mv $(DESTDIR)$(BASH_COMPLETION_DIR)/.qvm.tmp $(DESTDIR)$(BASH_COMPLETION_DIR)/qvm
	$(cli_qvm) --man qvm > $(DESTDIR)$(MANDIR)/man1/qvm.1
	@set -e; for l in $$($(cli_qvm) --list-links); do \
	  ln -sf qvm $(DESTDIR)$(BASH_COMPLETION_DIR)/$$l; \
	  $(cli_qvm) --man $$l > $(DESTDIR)$(MANDIR)/man1/$$l.1; done
	chmod 0644 $(DESTDIR)$(BASH_COMPLETION_DIR)/qvm $(DESTDIR)$(MANDIR)/man1/*.1
