/*
 * Stands in for the hypervisor so that the real `xl -N create` (dry run)
 * runs on a machine without Xen: LD_PRELOAD this library. It answers the
 * few libxenctrl calls xl makes before printing the domain config
 * (interface open/close, version, physinfo, sharing counters) and hands out
 * a xenstore handle that the dry run never uses. xl's config parser and
 * libxl's JSON generator are the real ones.
 */
#include <errno.h>
#include <string.h>
#include <xenctrl.h>
#include <xenstore.h>
#include <xen/version.h>

static int handle;

xc_interface *xc_interface_open(xentoollog_logger *logger,
				xentoollog_logger *dombuild_logger,
				unsigned open_flags)
{
	return (xc_interface *)&handle;
}

int xc_interface_close(xc_interface *xch)
{
	return 0;
}

int xc_version(xc_interface *xch, int cmd, void *arg)
{
	switch (cmd) {
	case XENVER_version:
		return (4 << 16) | 17;
	case XENVER_extraversion:
		strcpy(arg, ".0-fake");
		return 0;
	case XENVER_compile_info:
		memset(arg, 0, sizeof(xen_compile_info_t));
		return 0;
	case XENVER_capabilities:
		strcpy(arg, "xen-3.0-x86_64 hvm-3.0-x86_32 hvm-3.0-x86_64");
		return 0;
	case XENVER_changeset:
		strcpy(arg, "fake");
		return 0;
	case XENVER_platform_parameters:
		memset(arg, 0, sizeof(xen_platform_parameters_t));
		return 0;
	case XENVER_pagesize:
		return 4096;
	case XENVER_commandline:
		memset(arg, 0, sizeof(xen_commandline_t));
		return 0;
	}
	errno = ENOSYS;
	return -1;
}

int xc_physinfo(xc_interface *xch, xc_physinfo_t *info)
{
	memset(info, 0, sizeof(*info));
	info->threads_per_core = 1;
	info->cores_per_socket = 2;
	info->nr_cpus = 2;
	info->max_cpu_id = 1;
	info->nr_nodes = 1;
	info->max_node_id = 0;
	info->total_pages = 1 << 20;
	info->free_pages = 1 << 19;
	info->capabilities = XEN_SYSCTL_PHYSCAP_hvm | XEN_SYSCTL_PHYSCAP_pv |
			     XEN_SYSCTL_PHYSCAP_hap;
	return 0;
}

int xc_get_max_cpus(xc_interface *xch) { return 2; }
int xc_get_online_cpus(xc_interface *xch) { return 2; }
int xc_get_max_nodes(xc_interface *xch) { return 1; }
long xc_sharing_freed_pages(xc_interface *xch) { errno = ENOSYS; return -1; }
long xc_sharing_used_frames(xc_interface *xch) { errno = ENOSYS; return -1; }

struct xs_handle *xs_open(unsigned long flags)
{
	return (struct xs_handle *)&handle;
}

void xs_close(struct xs_handle *xsh)
{
}
