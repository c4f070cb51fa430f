/*
 * fakexen.c: stands in for the Xen hypervisor so that the real C xenstored
 * (/usr/lib/xen-4.17/bin/xenstored) runs on a machine without Xen.
 *
 * Load it with LD_PRELOAD. It defines the few libxenctrl, libxenevtchn and
 * libxengnttab calls xenstored makes, and answers its two /proc/xen files.
 * Only the hypervisor is faked: the store, its permissions, quotas,
 * transactions and watches are xenstored's own code.
 *
 * With XENSTORED_RUNDIR=DIR set (as the tests do), a test can also act as a
 * guest domain:
 *   DIR/fakexen-ring-<domid>  the domain's xenstore ring page (4096 bytes),
 *                             which xenstored maps when the domain is
 *                             introduced; a test maps the same file.
 *   DIR/fakexen-evtchn        a unix datagram socket: each datagram wakes
 *                             xenstored like an event-channel notification.
 *                             A 4-byte little-endian port number is reported
 *                             as the pending port; 0xffffffff means the
 *                             VIRQ_DOM_EXC port (xenstored then checks which
 *                             domains died).
 *   DIR/fakexen-dying-<domid> while this file exists, the domain is reported
 *                             as dying (and shut down).
 * Every other domid exists and runs.
 */
#define _GNU_SOURCE
#include <dlfcn.h>
#include <errno.h>
#include <fcntl.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include <xenctrl.h>
#include <xenevtchn.h>
#include <xengnttab.h>

#define PAGE 4096

struct xenevtchn_handle {
	int fd;
	evtchn_port_t virq_port;
};

static evtchn_port_t next_port = 1;

static const char *rundir(void)
{
	const char *d = getenv("XENSTORED_RUNDIR");
	return (d && *d) ? d : NULL;
}

/* ---- libxenctrl ---- */

xc_interface *xc_interface_open(xentoollog_logger *logger,
				xentoollog_logger *dombuild_logger,
				unsigned open_flags)
{
	static int token;
	(void)logger; (void)dombuild_logger; (void)open_flags;
	return (xc_interface *)&token;
}

int xc_interface_close(xc_interface *xch)
{
	(void)xch;
	return 0;
}

int xc_domain_getinfo(xc_interface *xch, uint32_t first_domid,
		      unsigned int max_doms, xc_dominfo_t *info)
{
	char path[4096];
	const char *d = rundir();

	(void)xch;
	if (max_doms == 0)
		return 0;
	memset(info, 0, sizeof(*info));
	info->domid = first_domid;
	info->running = 1;
	if (d) {
		snprintf(path, sizeof(path), "%s/fakexen-dying-%u", d, first_domid);
		if (access(path, F_OK) == 0) {
			info->running = 0;
			info->dying = 1;
			info->shutdown = 1;
		}
	}
	return 1;
}

/* ---- libxenevtchn ---- */

static int evtchn_socket(void)
{
	struct sockaddr_un sa = { .sun_family = AF_UNIX };
	const char *d = rundir();
	int fd, pair[2];

	if (d && strlen(d) + sizeof("/fakexen-evtchn") <= sizeof(sa.sun_path)) {
		fd = socket(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
		if (fd < 0)
			return -1;
		snprintf(sa.sun_path, sizeof(sa.sun_path), "%s/fakexen-evtchn", d);
		unlink(sa.sun_path);
		if (bind(fd, (struct sockaddr *)&sa, sizeof(sa)) == 0)
			return fd;
		close(fd);
	}
	/* No run directory: nobody can notify us, which is fine for dom0. */
	if (socketpair(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0, pair) < 0)
		return -1;
	return pair[0];
}

xenevtchn_handle *xenevtchn_open(struct xentoollog_logger *logger,
				 unsigned open_flags)
{
	xenevtchn_handle *h;

	(void)logger; (void)open_flags;
	h = calloc(1, sizeof(*h));
	if (!h)
		return NULL;
	h->fd = evtchn_socket();
	if (h->fd < 0) {
		free(h);
		return NULL;
	}
	return h;
}

xenevtchn_handle *xenevtchn_fdopen(struct xentoollog_logger *logger,
				   int fd, unsigned open_flags)
{
	xenevtchn_handle *h;

	(void)logger; (void)open_flags;
	h = calloc(1, sizeof(*h));
	if (!h)
		return NULL;
	h->fd = fd;
	return h;
}

int xenevtchn_close(xenevtchn_handle *xce)
{
	if (xce) {
		close(xce->fd);
		free(xce);
	}
	return 0;
}

int xenevtchn_fd(xenevtchn_handle *xce)
{
	return xce->fd;
}

int xenevtchn_notify(xenevtchn_handle *xce, evtchn_port_t port)
{
	(void)xce; (void)port;
	return 0;
}

xenevtchn_port_or_error_t
xenevtchn_bind_interdomain(xenevtchn_handle *xce, uint32_t domid,
			   evtchn_port_t remote_port)
{
	(void)xce; (void)domid; (void)remote_port;
	return next_port++;
}

xenevtchn_port_or_error_t
xenevtchn_bind_virq(xenevtchn_handle *xce, unsigned int virq)
{
	(void)virq;
	xce->virq_port = next_port++;
	return xce->virq_port;
}

int xenevtchn_unbind(xenevtchn_handle *xce, evtchn_port_t port)
{
	(void)xce; (void)port;
	return 0;
}

xenevtchn_port_or_error_t xenevtchn_pending(xenevtchn_handle *xce)
{
	unsigned char buf[16];
	ssize_t n;
	uint32_t port = 0;

	n = recv(xce->fd, buf, sizeof(buf), 0);
	if (n < 0) {
		if (errno == EAGAIN || errno == EINTR)
			return 0; /* spurious wake-up: port 0 is never bound */
		return -1;
	}
	if (n == 4) {
		port = buf[0] | buf[1] << 8 | buf[2] << 16 | (uint32_t)buf[3] << 24;
		if (port == 0xffffffffu)
			port = xce->virq_port;
	}
	return port;
}

int xenevtchn_unmask(xenevtchn_handle *xce, evtchn_port_t port)
{
	(void)xce; (void)port;
	return 0;
}

/* ---- libxengnttab ---- */

xengnttab_handle *xengnttab_open(struct xentoollog_logger *logger,
				 unsigned open_flags)
{
	static int token;
	(void)logger; (void)open_flags;
	return (xengnttab_handle *)&token;
}

int xengnttab_close(xengnttab_handle *xgt)
{
	(void)xgt;
	return 0;
}

int xengnttab_set_max_grants(xengnttab_handle *xgt, uint32_t nr_grants)
{
	(void)xgt; (void)nr_grants;
	return 0;
}

void *xengnttab_map_grant_ref(xengnttab_handle *xgt, uint32_t domid,
			      uint32_t ref, int prot)
{
	char path[4096];
	const char *d = rundir();
	void *p;
	int fd;

	(void)xgt; (void)ref;
	if (!d) {
		p = mmap(NULL, PAGE, prot, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
		return p == MAP_FAILED ? NULL : p;
	}
	snprintf(path, sizeof(path), "%s/fakexen-ring-%u", d, domid);
	fd = open(path, O_RDWR | O_CREAT | O_CLOEXEC, 0600);
	if (fd < 0)
		return NULL;
	if (ftruncate(fd, PAGE) < 0) {
		close(fd);
		return NULL;
	}
	p = mmap(NULL, PAGE, prot, MAP_SHARED, fd, 0);
	close(fd);
	return p == MAP_FAILED ? NULL : p;
}

int xengnttab_unmap(xengnttab_handle *xgt, void *start_address,
		    uint32_t count)
{
	(void)xgt;
	return munmap(start_address, (size_t)count * PAGE);
}

/* ---- /proc/xen/xsd_port and /proc/xen/xsd_kva ---- */

static int memfd_with(const char *name, const void *data, size_t len, size_t size)
{
	int fd = memfd_create(name, MFD_CLOEXEC);

	if (fd < 0)
		return -1;
	if (ftruncate(fd, size) < 0 ||
	    (len && pwrite(fd, data, len, 0) != (ssize_t)len)) {
		close(fd);
		return -1;
	}
	return fd;
}

int open(const char *path, int flags, ...)
{
	static int (*real_open)(const char *, int, ...);
	mode_t mode = 0;

	if (flags & (O_CREAT | O_TMPFILE)) {
		va_list ap;
		va_start(ap, flags);
		mode = va_arg(ap, mode_t);
		va_end(ap);
	}
	if (strcmp(path, "/proc/xen/xsd_port") == 0)
		return memfd_with("xsd_port", "1", 1, 1);
	if (strcmp(path, "/proc/xen/xsd_kva") == 0)
		return memfd_with("xsd_kva", NULL, 0, PAGE);
	if (!real_open)
		real_open = (int (*)(const char *, int, ...))dlsym(RTLD_NEXT, "open");
	return real_open(path, flags, mode);
}
