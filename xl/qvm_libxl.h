/* C helpers for package xl: what Go cannot do directly with libxl's
 * types (unions, defbools inside unions, varargs logging, the event loop). */
#ifndef QVM_LIBXL_H
#define QVM_LIBXL_H

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <libxl.h>
#include <libxl_utils.h>
#include <libxlutil.h>

/* The HVM part of libxl_domain_build_info (the u.hvm union member). The
 * strings are handed over: libxl_domain_config_dispose frees them. */
struct qvm_hvm {
	int bios;          /* libxl_bios_type */
	char *boot;        /* NULL: libxl default */
	int pae, viridian;
	char *serial;      /* NULL: no serial port */
	int vga;           /* libxl_vga_interface_type, 0: default */
	int usb_tablet;
	char *keymap;      /* NULL: default */
};

libxl_domain_config *qvm_config_new(int type);
void qvm_config_free(libxl_domain_config *c);
void qvm_set_hvm(libxl_domain_build_info *b, const struct qvm_hvm *h);
void qvm_set_pv_e820_host(libxl_domain_build_info *b, int on);
void qvm_defbool_set(libxl_defbool *d, int v);
int qvm_bitmap_set_first(libxl_bitmap *b, int n);
void qvm_uuid_set(libxl_uuid *u, const unsigned char *bytes);
void qvm_uuid_get(const libxl_uuid *u, unsigned char *bytes);
void *qvm_calloc_array(size_t n, size_t size);

/* libxlutil access for xl.cfg text. */
struct qvm_xlu {
	XLU_Config *cfg;
	FILE *report;   /* libxlutil's error messages, kept in buf */
	char *buf;
	size_t buflen;
	int err;        /* errno value from xlu_cfg_readdata */
};
struct qvm_xlu *qvm_xlu_open(const char *data, int len);
const char *qvm_xlu_report(struct qvm_xlu *q);
void qvm_xlu_close(struct qvm_xlu *q);
int qvm_xlu_disk_json(struct qvm_xlu *q, const char *spec, char **json_out);
int qvm_xlu_pci_json(struct qvm_xlu *q, const char *spec, char **json_out);

/* Logging: a xentoollog_logger that hands messages to Go. */
xentoollog_logger *qvm_logger_new(uintptr_t handle, int minlevel);
void qvm_logger_free(xentoollog_logger *lg);

/* Lifecycle. */
int qvm_ctx_open(libxl_ctx **ctx_out, xentoollog_logger *lg, uintptr_t handle);
int qvm_event_loop(libxl_ctx *ctx, int stopfd);
int qvm_create_async(libxl_ctx *ctx, libxl_domain_config *cfg, uint32_t *domid, uint64_t token);
int qvm_shutdown_async(libxl_ctx *ctx, uint32_t domid, uint64_t token);
int qvm_ao_abort(libxl_ctx *ctx, uint64_t token);

#endif
