//go:build cgo

/* C helpers for package xl; see qvm_libxl.h. */

#include <errno.h>
#include <poll.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include <sys/time.h>
#include <unistd.h>

#include "qvm_libxl.h"
#include "_cgo_export.h"

libxl_domain_config *qvm_config_new(int type)
{
	libxl_domain_config *c = calloc(1, sizeof(*c));
	if (!c)
		return NULL;
	libxl_domain_config_init(c);
	c->c_info.type = type;
	libxl_domain_build_info_init_type(&c->b_info, type);
	return c;
}

void qvm_config_free(libxl_domain_config *c)
{
	if (!c)
		return;
	libxl_domain_config_dispose(c);
	free(c);
}

void qvm_set_hvm(libxl_domain_build_info *b, const struct qvm_hvm *h)
{
	b->u.hvm.bios = h->bios;
	b->u.hvm.boot = h->boot;
	libxl_defbool_set(&b->u.hvm.pae, h->pae);
	libxl_defbool_set(&b->u.hvm.viridian, h->viridian);
	b->u.hvm.serial = h->serial;
	if (h->vga)
		b->u.hvm.vga.kind = h->vga;
	if (h->usb_tablet) {
		libxl_defbool_set(&b->u.hvm.usb, true);
		b->u.hvm.usbdevice_list = calloc(2, sizeof(char *));
		if (b->u.hvm.usbdevice_list)
			b->u.hvm.usbdevice_list[0] = strdup("tablet");
	} else {
		libxl_defbool_set(&b->u.hvm.usb, false);
	}
	b->u.hvm.keymap = h->keymap;
	/* No VNC or SDL display in dom0: the toolstack shows guests its own way. */
	libxl_defbool_set(&b->u.hvm.vnc.enable, false);
	libxl_defbool_set(&b->u.hvm.sdl.enable, false);
}

void qvm_set_pv_e820_host(libxl_domain_build_info *b, int on)
{
	libxl_defbool_set(&b->u.pv.e820_host, on);
}

void qvm_defbool_set(libxl_defbool *d, int v)
{
	libxl_defbool_set(d, v != 0);
}

int qvm_bitmap_set_first(libxl_bitmap *b, int n)
{
	int i;
	b->size = (n + 7) / 8;
	b->map = calloc(b->size, 1);
	if (!b->map) {
		b->size = 0;
		return -1;
	}
	for (i = 0; i < n; i++)
		b->map[i / 8] |= 1 << (i % 8);
	return 0;
}

void qvm_uuid_set(libxl_uuid *u, const unsigned char *bytes)
{
	memcpy(libxl_uuid_bytearray(u), bytes, 16);
}

void qvm_uuid_get(const libxl_uuid *u, unsigned char *bytes)
{
	memcpy(bytes, libxl_uuid_bytearray_const(u), 16);
}

void *qvm_calloc_array(size_t n, size_t size)
{
	return calloc(n ? n : 1, size);
}

/* ---- libxlutil ---- */

struct qvm_xlu *qvm_xlu_open(const char *data, int len)
{
	struct qvm_xlu *q = calloc(1, sizeof(*q));
	if (!q)
		return NULL;
	q->report = open_memstream(&q->buf, &q->buflen);
	if (!q->report) {
		free(q);
		return NULL;
	}
	q->cfg = xlu_cfg_init(q->report, "xl.cfg");
	if (!q->cfg) {
		qvm_xlu_close(q);
		return NULL;
	}
	q->err = xlu_cfg_readdata(q->cfg, data, len);
	return q;
}

const char *qvm_xlu_report(struct qvm_xlu *q)
{
	fflush(q->report);
	return q->buf ? q->buf : "";
}

void qvm_xlu_close(struct qvm_xlu *q)
{
	if (!q)
		return;
	if (q->cfg)
		xlu_cfg_destroy(q->cfg);
	if (q->report)
		fclose(q->report);
	free(q->buf);
	free(q);
}

int qvm_xlu_disk_json(struct qvm_xlu *q, const char *spec, char **json_out)
{
	libxl_device_disk d;
	int e;

	*json_out = NULL;
	libxl_device_disk_init(&d);
	e = xlu_disk_parse(q->cfg, 1, &spec, &d);
	if (!e)
		*json_out = libxl_device_disk_to_json(NULL, &d);
	libxl_device_disk_dispose(&d);
	return e;
}

int qvm_xlu_pci_json(struct qvm_xlu *q, const char *spec, char **json_out)
{
	libxl_device_pci p;
	int e;

	*json_out = NULL;
	libxl_device_pci_init(&p);
	e = xlu_pci_parse_spec_string(q->cfg, &p, spec);
	if (!e)
		*json_out = libxl_device_pci_to_json(NULL, &p);
	libxl_device_pci_dispose(&p);
	return e;
}

/* ---- logging ---- */

struct qvm_logger {
	xentoollog_logger vtable;
	uintptr_t handle; /* cgo.Handle of the Go side */
	pid_t pid;        /* the process Go runs in */
	int minlevel;
};

static void qvm_vmessage(xentoollog_logger *lg, xentoollog_level level,
			 int errnoval, const char *context,
			 const char *format, va_list al)
{
	struct qvm_logger *q = (struct qvm_logger *)lg;
	char msg[4096];

	if ((int)level < q->minlevel)
		return;
	vsnprintf(msg, sizeof(msg), format, al);
	if (getpid() != q->pid) {
		/* A child libxl forked and has not exec'd yet: the Go
		 * runtime does not exist here, write straight to stderr. */
		dprintf(2, "%s: %s\n", context ? context : "libxl", msg);
		return;
	}
	qvmLogMessage(q->handle, (int)level, errnoval, (char *)context, msg);
}

static void qvm_log_destroy(xentoollog_logger *lg)
{
	(void)lg; /* freed by qvm_logger_free */
}

xentoollog_logger *qvm_logger_new(uintptr_t handle, int minlevel)
{
	struct qvm_logger *q = calloc(1, sizeof(*q));
	if (!q)
		return NULL;
	q->vtable.vmessage = qvm_vmessage;
	q->vtable.progress = NULL;
	q->vtable.destroy = qvm_log_destroy;
	q->handle = handle;
	q->pid = getpid();
	q->minlevel = minlevel;
	return &q->vtable;
}

void qvm_logger_free(xentoollog_logger *lg)
{
	free(lg);
}

/* ---- context, events ---- */

/* SIGCHLD belongs to the Go program: libxl must not install a handler
 * (Go requires SA_ONSTACK, and reaping other children would steal
 * os/exec's). Go calls libxl_childproc_sigchld_occurred instead, and libxl
 * then reaps only its own children. */
static const libxl_childproc_hooks qvm_childproc_hooks = {
	.chldowner = libxl_sigchld_owner_mainloop,
};

static void qvm_event_occurs(void *user, libxl_event *ev)
{
	int detail = -1;
	if (ev->type == LIBXL_EVENT_TYPE_DOMAIN_SHUTDOWN)
		detail = ev->u.domain_shutdown.shutdown_reason;
	else if (ev->type == LIBXL_EVENT_TYPE_OPERATION_COMPLETE)
		detail = ev->u.operation_complete.rc;
	qvmEvent((uintptr_t)user, (int)ev->type, ev->domid, ev->for_user, detail);
	libxl_event_free(NULL, ev);
}

static void qvm_event_disaster(void *user, libxl_event_type type,
			       const char *msg, int errnoval)
{
	qvmEventDisaster((uintptr_t)user, (int)type, (char *)msg, errnoval);
}

static const libxl_event_hooks qvm_event_hooks = {
	.event_occurs_mask = ~(uint64_t)0,
	.event_occurs = qvm_event_occurs,
	.disaster = qvm_event_disaster,
};

int qvm_ctx_open(libxl_ctx **ctx_out, xentoollog_logger *lg, uintptr_t handle)
{
	int rc = libxl_ctx_alloc(ctx_out, LIBXL_VERSION, 0, lg);
	if (rc)
		return rc;
	libxl_childproc_setmode(*ctx_out, &qvm_childproc_hooks, NULL);
	libxl_event_register_callbacks(*ctx_out, &qvm_event_hooks, (void *)handle);
	return 0;
}

/* qvm_event_loop drives libxl's file descriptors and timeouts until stopfd
 * becomes readable. Events are delivered through qvm_event_occurs, in
 * whichever thread libxl generates them. */
int qvm_event_loop(libxl_ctx *ctx, int stopfd)
{
	int alloc = 16, nfds, timeout, rc = 0;
	struct pollfd *fds = calloc(alloc + 1, sizeof(*fds));

	if (!fds)
		return ERROR_NOMEM;
	for (;;) {
		struct timeval now;

		gettimeofday(&now, NULL);
		nfds = alloc;
		timeout = -1;
		rc = libxl_osevent_beforepoll(ctx, &nfds, fds + 1, &timeout, now);
		if (rc == ERROR_BUFFERFULL) {
			struct pollfd *nf = realloc(fds, (nfds + 1) * sizeof(*fds));
			if (!nf) {
				rc = ERROR_NOMEM;
				break;
			}
			fds = nf;
			alloc = nfds;
			continue;
		}
		if (rc)
			break;
		fds[0].fd = stopfd;
		fds[0].events = POLLIN;
		fds[0].revents = 0;
		if (poll(fds, nfds + 1, timeout) < 0) {
			if (errno == EINTR)
				continue;
			rc = ERROR_FAIL;
			break;
		}
		if (fds[0].revents)
			break;
		gettimeofday(&now, NULL);
		libxl_osevent_afterpoll(ctx, nfds, fds + 1, now);
	}
	free(fds);
	return rc;
}

/* Asynchronous operations: completion comes back as an
 * OPERATION_COMPLETE event whose for_user is token (see qvm_event_occurs),
 * and libxl_ao_abort finds the operation by the same how. */
static libxl_asyncop_how qvm_how(uint64_t token)
{
	libxl_asyncop_how how;
	memset(&how, 0, sizeof(how));
	how.callback = NULL;
	how.u.for_event = token;
	return how;
}

int qvm_create_async(libxl_ctx *ctx, libxl_domain_config *cfg, uint32_t *domid, uint64_t token)
{
	libxl_asyncop_how how = qvm_how(token);
	return libxl_domain_create_new(ctx, cfg, domid, &how, NULL);
}

int qvm_shutdown_async(libxl_ctx *ctx, uint32_t domid, uint64_t token)
{
	libxl_asyncop_how how = qvm_how(token);
	return libxl_domain_shutdown(ctx, domid, &how);
}

int qvm_ao_abort(libxl_ctx *ctx, uint64_t token)
{
	libxl_asyncop_how how = qvm_how(token);
	return libxl_ao_abort(ctx, &how);
}
