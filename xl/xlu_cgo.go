//go:build cgo

package xl

/*
#include "qvm_libxl.h"
*/
import "C"

import (
	"fmt"
	"strings"
	"unsafe"
)

// xluConfig is xl.cfg text parsed by libxlutil, the parser `xl create`
// uses. It answers what xl would read for each key.
type xluConfig struct {
	q *C.struct_qvm_xlu
}

// parseXLConfig parses text with libxlutil. Close the result.
func parseXLConfig(text string) (*xluConfig, error) {
	ct := C.CString(text)
	defer C.free(unsafe.Pointer(ct))
	q := C.qvm_xlu_open(ct, C.int(len(text)))
	if q == nil {
		return nil, fmt.Errorf("xl.cfg: libxlutil: out of memory")
	}
	if q.err != 0 {
		msg := strings.TrimSpace(C.GoString(C.qvm_xlu_report(q)))
		C.qvm_xlu_close(q)
		return nil, fmt.Errorf("xl.cfg does not parse: %s", msg)
	}
	return &xluConfig{q: q}, nil
}

func (x *xluConfig) Close() {
	C.qvm_xlu_close(x.q)
	x.q = nil
}

// report returns libxlutil's messages so far.
func (x *xluConfig) report() string { return C.GoString(C.qvm_xlu_report(x.q)) }

func (x *xluConfig) str(key string) (string, bool) {
	ck := C.CString(key)
	defer C.free(unsafe.Pointer(ck))
	var v *C.char
	if C.xlu_cfg_get_string(x.q.cfg, ck, &v, 1) != 0 {
		return "", false
	}
	return C.GoString(v), true
}

func (x *xluConfig) long(key string) (int64, bool) {
	ck := C.CString(key)
	defer C.free(unsafe.Pointer(ck))
	var v C.long
	if C.xlu_cfg_get_long(x.q.cfg, ck, &v, 1) != 0 {
		return 0, false
	}
	return int64(v), true
}

func (x *xluConfig) list(key string) ([]string, bool) {
	ck := C.CString(key)
	defer C.free(unsafe.Pointer(ck))
	var l *C.XLU_ConfigList
	var n C.int
	if C.xlu_cfg_get_list(x.q.cfg, ck, &l, &n, 1) != 0 {
		return nil, false
	}
	out := make([]string, 0, int(n))
	for i := 0; i < int(n); i++ {
		item := C.xlu_cfg_get_listitem(l, C.int(i))
		if item == nil {
			return nil, false
		}
		out = append(out, C.GoString(item))
	}
	return out, true
}

// diskJSON parses one disk spec with xlu_disk_parse and returns the
// libxl_device_disk it made, as libxl's JSON.
func (x *xluConfig) diskJSON(spec string) (string, error) {
	cs := C.CString(spec)
	defer C.free(unsafe.Pointer(cs))
	var js *C.char
	if e := C.qvm_xlu_disk_json(x.q, cs, &js); e != 0 {
		return "", fmt.Errorf("disk spec %q: %s", spec, strings.TrimSpace(x.report()))
	}
	defer C.free(unsafe.Pointer(js))
	return C.GoString(js), nil
}

// pciJSON parses one PCI spec with xlu_pci_parse_spec_string and returns
// the libxl_device_pci it made, as libxl's JSON.
func (x *xluConfig) pciJSON(spec string) (string, error) {
	cs := C.CString(spec)
	defer C.free(unsafe.Pointer(cs))
	var js *C.char
	if e := C.qvm_xlu_pci_json(x.q, cs, &js); e != 0 {
		return "", fmt.Errorf("pci spec %q: %s", spec, strings.TrimSpace(x.report()))
	}
	defer C.free(unsafe.Pointer(js))
	return C.GoString(js), nil
}
