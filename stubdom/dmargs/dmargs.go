// Package dmargs reads the device-model command line that libxl hands a
// Linux stubdomain and turns it into the command the stubdomain runs.
//
// libxl writes QEMU's arguments one per xenstore key under
// <vm path>/image/dm-argv (keys "001", "002", ...). Among them qvm puts its
// own "-qubes-net:..." argument (the VM's address, gateway, netmask and
// DNS, for the stubdomain's DHCP server), and Qubes may add
// "-qubes-audio:..."; neither is a QEMU option, so both are taken out here.
// The guest's emulated NICs ("-device MODEL,...,netdev=ID,mac=MAC" with
// "-netdev type=tap,id=ID,ifname=NAME,...") tell the stubdomain which tap
// device QEMU will open and which MAC its DHCP server answers.
//
// Everything here is a pure function of its input, so it is tested and
// fuzzed without a stubdomain.
package dmargs

import (
	"errors"
	"fmt"
	"net"
	"net/netip"
	"sort"
	"strconv"
	"strings"
)

// Prefixes of the arguments that are meant for the stubdomain, not QEMU.
const (
	QubesNetPrefix   = "-qubes-net:"
	QubesAudioPrefix = "-qubes-audio:"
)

// RestoreMarker is the placeholder libxl puts in the arguments of a
// stubdomain that restores a saved guest.
const RestoreMarker = "$STUBDOM_RESTORE_INCOMING_ARG"

// maxArgs bounds the number of arguments accepted (libxl writes a few
// dozen).
const maxArgs = 4096

// Sorted returns the values of the dm-argv entries in the order of their
// keys, which are decimal numbers ("001", "002", ...; libxl numbers them
// from 1 with at least three digits). The keys are compared as numbers, so
// "1000" comes after "999". Keys that are not decimal numbers, two keys
// for the same number, and gaps in the numbering are errors: a lost or
// doubled argument would change what QEMU does.
func Sorted(entries map[string]string) ([]string, error) {
	if len(entries) == 0 {
		return nil, errors.New("dm-argv has no entries: libxl wrote no device-model arguments")
	}
	if len(entries) > maxArgs {
		return nil, fmt.Errorf("dm-argv has %d entries, more than %d", len(entries), maxArgs)
	}
	type entry struct {
		n   int
		key string
	}
	list := make([]entry, 0, len(entries))
	for k := range entries {
		if k == "" || len(k) > 9 || strings.Trim(k, "0123456789") != "" {
			return nil, fmt.Errorf("dm-argv entry %q: want a decimal number as key (001, 002, ...)", k)
		}
		n, err := strconv.Atoi(k)
		if err != nil {
			return nil, fmt.Errorf("dm-argv entry %q: %w", k, err)
		}
		list = append(list, entry{n, k})
	}
	sort.Slice(list, func(i, j int) bool { return list[i].n < list[j].n })
	first := list[0].n
	if first != 0 && first != 1 {
		return nil, fmt.Errorf("dm-argv entries start at %q: want 001", list[0].key)
	}
	out := make([]string, len(list))
	for i, e := range list {
		if i > 0 && e.n == list[i-1].n {
			return nil, fmt.Errorf("dm-argv entries %q and %q are the same number", list[i-1].key, e.key)
		}
		if e.n != first+i {
			return nil, fmt.Errorf("dm-argv entry %d is missing (next is %q)", first+i, e.key)
		}
		out[i] = entries[e.key]
	}
	return out, nil
}

// Net is the network setting of the guest, from -qubes-net.
type Net struct {
	ClientIP netip.Addr
	Gateway  netip.Addr
	Netmask  net.IPMask
	DNS      []netip.Addr
}

// ParseQubesNet parses
// "-qubes-net:client_ip=IP,dns_0=IP,dns_1=IP,gw=IP,netmask=MASK" (the keys
// in any order; dns_0 and dns_1 may be left out or empty). client_ip, gw
// and netmask are required; every address is IPv4; unknown keys and
// repeated keys are errors.
func ParseQubesNet(arg string) (Net, error) {
	var n Net
	body, ok := strings.CutPrefix(arg, QubesNetPrefix)
	if !ok {
		return n, fmt.Errorf("%q is not a %s argument", arg, QubesNetPrefix)
	}
	seen := map[string]bool{}
	dns := [2]netip.Addr{}
	for _, kv := range strings.Split(body, ",") {
		k, v, ok := strings.Cut(kv, "=")
		if !ok {
			return n, fmt.Errorf("%s: %q is not key=value", QubesNetPrefix, kv)
		}
		if seen[k] {
			return n, fmt.Errorf("%s: %s given twice", QubesNetPrefix, k)
		}
		seen[k] = true
		switch k {
		case "client_ip", "gw", "dns_0", "dns_1":
			if v == "" && (k == "dns_0" || k == "dns_1") {
				continue
			}
			a, err := netip.ParseAddr(v)
			if err != nil || !a.Is4() || a.IsUnspecified() || a.IsMulticast() || a == netip.AddrFrom4([4]byte{255, 255, 255, 255}) {
				return n, fmt.Errorf("%s: %s=%q is not a usable IPv4 address", QubesNetPrefix, k, v)
			}
			switch k {
			case "client_ip":
				n.ClientIP = a
			case "gw":
				n.Gateway = a
			case "dns_0":
				dns[0] = a
			case "dns_1":
				dns[1] = a
			}
		case "netmask":
			m, err := parseNetmask(v)
			if err != nil {
				return n, fmt.Errorf("%s: netmask=%q: %w", QubesNetPrefix, v, err)
			}
			n.Netmask = m
		default:
			return n, fmt.Errorf("%s: unknown key %q (want client_ip, gw, netmask, dns_0, dns_1)", QubesNetPrefix, k)
		}
	}
	for _, k := range []string{"client_ip", "gw", "netmask"} {
		if !seen[k] {
			return n, fmt.Errorf("%s: %s is missing", QubesNetPrefix, k)
		}
	}
	if n.ClientIP == n.Gateway {
		return n, fmt.Errorf("%s: client_ip and gw are both %s", QubesNetPrefix, n.ClientIP)
	}
	for _, d := range dns {
		if d.IsValid() {
			n.DNS = append(n.DNS, d)
		}
	}
	return n, nil
}

// parseNetmask accepts a dotted IPv4 netmask with contiguous ones.
func parseNetmask(s string) (net.IPMask, error) {
	a, err := netip.ParseAddr(s)
	if err != nil || !a.Is4() {
		return nil, errors.New("not a dotted IPv4 netmask")
	}
	b := a.As4()
	m := net.IPv4Mask(b[0], b[1], b[2], b[3])
	if ones, bits := m.Size(); bits == 0 || ones == 0 {
		return nil, errors.New("not a netmask (the ones must be contiguous and at least one)")
	}
	return m, nil
}

// NIC is an emulated network card of the guest, backed by a tap device.
type NIC struct {
	// Device is the QEMU device id (nic0) and Model its driver (rtl8139).
	Device, Model string
	// MAC is the guest's address on this card.
	MAC net.HardwareAddr
	// Netdev is the id of the QEMU network backend (net0).
	Netdev string
	// Ifname is the tap device QEMU opens for it (vif5.0-emu).
	Ifname string
}

// Args is the device-model command line split into its parts.
type Args struct {
	// QEMU are the arguments for QEMU: libxl's, minus the stubdomain's own.
	QEMU []string
	// Net is the guest's network setting; nil when the VM has no netvm.
	Net *Net
	// Audio is the -qubes-audio argument, if any (not supported: it is
	// dropped).
	Audio string
	// NICs are the guest's emulated network cards with tap backends.
	NICs []NIC
}

// Split takes the stubdomain's own arguments out of libxl's list and finds
// the guest's NICs. It refuses what this stubdomain cannot do (restoring
// a saved guest) and a -qubes-net without a NIC to serve, or a NIC's tap
// device with a name the kernel would refuse.
func Split(argv []string) (Args, error) {
	var a Args
	if len(argv) > maxArgs {
		return a, fmt.Errorf("%d device-model arguments, more than %d", len(argv), maxArgs)
	}
	devices := map[string]NIC{} // by netdev id
	var order []string
	taps := map[string]string{} // netdev id -> ifname
	for i := 0; i < len(argv); i++ {
		arg := argv[i]
		switch {
		case strings.HasPrefix(arg, QubesNetPrefix):
			if a.Net != nil {
				return a, fmt.Errorf("%s given twice", QubesNetPrefix)
			}
			n, err := ParseQubesNet(arg)
			if err != nil {
				return a, err
			}
			a.Net = &n
			continue
		case strings.HasPrefix(arg, QubesAudioPrefix):
			a.Audio = arg
			continue
		case strings.Contains(arg, RestoreMarker):
			return a, errors.New("libxl asks the stubdomain to restore a saved guest: saving and restoring HVM guests is not supported")
		}
		a.QEMU = append(a.QEMU, arg)
		if (arg != "-device" && arg != "-netdev") || i+1 >= len(argv) {
			continue
		}
		// The option's value is consumed with it.
		i++
		val := argv[i]
		a.QEMU = append(a.QEMU, val)
		switch arg {
		case "-device":
			driver, opts, err := ParseOpts(val, "driver")
			if err != nil {
				return a, fmt.Errorf("-device %q: %w", val, err)
			}
			if nd, ok := opts["netdev"]; ok {
				nic := NIC{Device: opts["id"], Model: driver, Netdev: nd}
				if m, ok := opts["mac"]; ok {
					mac, err := net.ParseMAC(m)
					if err != nil || len(mac) != 6 {
						return a, fmt.Errorf("-device %q: mac %q is not a MAC address", val, m)
					}
					nic.MAC = mac
				}
				if _, dup := devices[nd]; dup {
					return a, fmt.Errorf("two NICs use netdev %q", nd)
				}
				devices[nd] = nic
				order = append(order, nd)
			}
		case "-netdev":
			typ, opts, err := ParseOpts(val, "type")
			if err != nil {
				return a, fmt.Errorf("-netdev %q: %w", val, err)
			}
			if typ == "tap" {
				id, name := opts["id"], opts["ifname"]
				if id == "" || name == "" {
					return a, fmt.Errorf("-netdev %q: a tap backend needs id= and ifname=", val)
				}
				if err := CheckIfname(name); err != nil {
					return a, fmt.Errorf("-netdev %q: %w", val, err)
				}
				taps[id] = name
			}
		}
	}
	for _, nd := range order {
		nic := devices[nd]
		name, ok := taps[nd]
		if !ok {
			continue
		}
		nic.Ifname = name
		a.NICs = append(a.NICs, nic)
	}
	if a.Net != nil && len(a.NICs) == 0 {
		return a, fmt.Errorf("%s is given but the guest has no emulated NIC with a tap backend to serve", QubesNetPrefix)
	}
	if a.Net != nil && a.NICs[0].MAC == nil {
		return a, fmt.Errorf("NIC %s has no mac=: the DHCP server needs the guest's MAC", a.NICs[0].Device)
	}
	return a, nil
}

// ParseOpts parses a QEMU option string "first,key=value,..." where a
// first element without '=' is the value of implied (e.g. the driver of
// -device), a later one without '=' a flag set to "on", and ",," stands
// for a comma inside a value.
func ParseOpts(s, implied string) (first string, opts map[string]string, err error) {
	opts = map[string]string{}
	var parts []string
	var cur strings.Builder
	for i := 0; i < len(s); i++ {
		if s[i] == ',' {
			if i+1 < len(s) && s[i+1] == ',' {
				cur.WriteByte(',')
				i++
				continue
			}
			parts = append(parts, cur.String())
			cur.Reset()
			continue
		}
		cur.WriteByte(s[i])
	}
	parts = append(parts, cur.String())
	for i, p := range parts {
		k, v, ok := strings.Cut(p, "=")
		if !ok {
			if i == 0 && p != "" {
				first = p
				continue
			}
			// A bare flag is QEMU's short form of flag=on.
			k, v = p, "on"
		}
		if k == "" {
			return "", nil, fmt.Errorf("option %q has no key", p)
		}
		if _, dup := opts[k]; dup {
			return "", nil, fmt.Errorf("option %s given twice", k)
		}
		opts[k] = v
	}
	if first == "" {
		first = opts[implied]
	} else if _, dup := opts[implied]; dup {
		return "", nil, fmt.Errorf("%s given twice", implied)
	}
	return first, opts, nil
}

// CheckIfname refuses network interface names the kernel would refuse.
func CheckIfname(name string) error {
	if name == "" || len(name) > 15 || name == "." || name == ".." {
		return fmt.Errorf("interface name %q: want 1 to 15 characters", name)
	}
	for _, c := range []byte(name) {
		if c <= ' ' || c == '/' || c == ':' || c >= 0x7f {
			return fmt.Errorf("interface name %q: no spaces, '/', ':' or control characters", name)
		}
	}
	return nil
}

// QMPChardev is the id of the monitor the stubdomain adds to QEMU.
const QMPChardev = "qvm-qmp"

// QEMUArgv is the full command line of QEMU in the stubdomain: the binary,
// a QMP monitor on the unix socket qmpSocket (which libxl does not ask
// for: the stubdomain adds it and relays it to dom0), then libxl's
// arguments.
func QEMUArgv(binary, qmpSocket string, args []string) []string {
	argv := make([]string, 0, len(args)+5)
	argv = append(argv, binary,
		"-chardev", "socket,id="+QMPChardev+",path="+strings.ReplaceAll(qmpSocket, ",", ",,")+",server=on,wait=off",
		"-mon", "chardev="+QMPChardev+",mode=control")
	return append(argv, args...)
}

// The disks on which qvm gives the stubdomain of an HVM that boots a dom0
// kernel that kernel and its initramfs (zero-padded copies, read-only):
// libxl's -kernel and -initrd name dom0's files, which the stubdomain
// cannot read.
const (
	BootKernelVdev    = "xvde"
	BootInitramfsVdev = "xvdf"
)

// Boot is how the guest boots when libxl asked for a direct kernel boot:
// whether it did (-kernel), and with an initramfs (-initrd).
type Boot struct {
	Kernel, Initramfs bool
}

// BootOf reports the direct kernel boot QEMU's arguments ask for.
func BootOf(args []string) Boot {
	var b Boot
	for i := 0; i+1 < len(args); i++ {
		switch args[i] {
		case "-kernel":
			b.Kernel = true
		case "-initrd":
			b.Initramfs = true
		}
	}
	return b
}

// BootFromDiscs returns QEMU's arguments with -kernel and -initrd
// pointing at the devices kernelDev and initramfsDev (the disks
// BootKernelVdev and BootInitramfsVdev), in place of the dom0 paths libxl
// gave.
func BootFromDiscs(args []string, kernelDev, initramfsDev string) []string {
	out := append([]string(nil), args...)
	for i := 0; i+1 < len(out); i++ {
		switch out[i] {
		case "-kernel":
			i++
			out[i] = kernelDev
		case "-initrd":
			i++
			out[i] = initramfsDev
		}
	}
	return out
}
