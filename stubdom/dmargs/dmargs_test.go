package dmargs

import (
	"fmt"
	"net"
	"net/netip"
	"reflect"
	"strings"
	"testing"
)

// libxlArgs is what libxl 4.17 wrote for a networked HVM with a CD-ROM
// (seen in the nested Xen), before the stubdomain's own argument.
var libxlArgs = []string{
	"-xen-domid", "5", "-no-shutdown", "-nodefaults", "-no-user-config", "-name", "work",
	"-display", "none", "-nographic", "-device", "VGA,vgamem_mb=16",
	"-boot", "order=dc", "-usb", "-usbdevice", "tablet", "-smp", "2",
	"-device", "rtl8139,id=nic0,netdev=net0,mac=00:16:3e:5e:6c:05",
	"-netdev", "type=tap,id=net0,ifname=vif5.0-emu,br=xenbr0,script=no,downscript=no",
	"-machine", "xenfv,suppress-vmdesc=on", "-m", "400",
	"-drive", "if=none,readonly=on,id=ide-5632,file=/dev/xvdd,format=host_device",
	"-device", "ide-cd,id=ide-5632,drive=ide-5632,bus=ide.1,unit=1",
}

const netArg = "-qubes-net:client_ip=10.137.0.5,dns_0=10.139.1.1,dns_1=10.139.1.2,gw=10.137.0.1,netmask=255.255.255.255"

// entries numbers args the way libxl writes them into xenstore.
func entries(args []string) map[string]string {
	m := map[string]string{}
	for i, a := range args {
		m[fmt.Sprintf("%03d", i+1)] = a
	}
	return m
}

func TestSortedNumericOrder(t *testing.T) {
	var args []string
	for i := 0; i < 1203; i++ {
		args = append(args, fmt.Sprintf("arg%d", i))
	}
	got, err := Sorted(entries(args))
	if err != nil {
		t.Fatal(err)
	}
	// As strings "1000" < "101"; as numbers it comes after "999".
	if !reflect.DeepEqual(got, args) {
		for i := range got {
			if got[i] != args[i] {
				t.Fatalf("entry %d is %q, want %q", i, got[i], args[i])
			}
		}
	}
}

func TestSortedRefuses(t *testing.T) {
	for _, tc := range []struct {
		name string
		m    map[string]string
		want string
	}{
		{"empty", map[string]string{}, "no entries"},
		{"not a number", map[string]string{"001": "a", "x2": "b"}, `"x2"`},
		{"negative", map[string]string{"001": "a", "-2": "b"}, `"-2"`},
		{"gap", map[string]string{"001": "a", "003": "c"}, "entry 2 is missing"},
		{"same number", map[string]string{"001": "a", "1": "b", "002": "c"}, "same number"},
		{"late start", map[string]string{"005": "a"}, "start at"},
		{"huge", map[string]string{"0000000001": "a"}, "decimal number"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := Sorted(tc.m)
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("Sorted(%v) = %v, want an error with %q", tc.m, err, tc.want)
			}
		})
	}
}

func TestParseQubesNet(t *testing.T) {
	n, err := ParseQubesNet(netArg)
	if err != nil {
		t.Fatal(err)
	}
	want := Net{
		ClientIP: netip.MustParseAddr("10.137.0.5"),
		Gateway:  netip.MustParseAddr("10.137.0.1"),
		Netmask:  net.IPv4Mask(255, 255, 255, 255),
		DNS:      []netip.Addr{netip.MustParseAddr("10.139.1.1"), netip.MustParseAddr("10.139.1.2")},
	}
	if !reflect.DeepEqual(n, want) {
		t.Fatalf("got %+v, want %+v", n, want)
	}
	// Key order does not matter; DNS may be missing or empty.
	n, err = ParseQubesNet("-qubes-net:netmask=255.255.255.0,gw=192.168.1.1,client_ip=192.168.1.9,dns_0=")
	if err != nil {
		t.Fatal(err)
	}
	if len(n.DNS) != 0 || n.ClientIP.String() != "192.168.1.9" || net.IP(n.Netmask).String() != "255.255.255.0" {
		t.Fatalf("got %+v", n)
	}
}

func TestParseQubesNetRefuses(t *testing.T) {
	for _, tc := range []struct{ arg, want string }{
		{"-qubes-audio:x=1", "not a -qubes-net"},
		{"-qubes-net:", "not key=value"},
		{"-qubes-net:client_ip=10.0.0.2,gw=10.0.0.1", "netmask is missing"},
		{"-qubes-net:gw=10.0.0.1,netmask=255.0.0.0", "client_ip is missing"},
		{"-qubes-net:client_ip=10.0.0.2,netmask=255.0.0.0", "gw is missing"},
		{"-qubes-net:client_ip=10.0.0.256,gw=10.0.0.1,netmask=255.0.0.0", "client_ip"},
		{"-qubes-net:client_ip=fd00::1,gw=10.0.0.1,netmask=255.0.0.0", "IPv4"},
		{"-qubes-net:client_ip=0.0.0.0,gw=10.0.0.1,netmask=255.0.0.0", "usable"},
		{"-qubes-net:client_ip=10.0.0.2,gw=224.0.0.1,netmask=255.0.0.0", "gw"},
		{"-qubes-net:client_ip=10.0.0.2,gw=10.0.0.1,netmask=255.0.255.0", "contiguous"},
		{"-qubes-net:client_ip=10.0.0.2,gw=10.0.0.1,netmask=0.0.0.0", "contiguous"},
		{"-qubes-net:client_ip=10.0.0.2,gw=10.0.0.1,netmask=24", "netmask"},
		{"-qubes-net:client_ip=10.0.0.2,gw=10.0.0.1,netmask=255.0.0.0,mtu=1500", `unknown key "mtu"`},
		{"-qubes-net:client_ip=10.0.0.2,client_ip=10.0.0.3,gw=10.0.0.1,netmask=255.0.0.0", "twice"},
		{"-qubes-net:client_ip=10.0.0.1,gw=10.0.0.1,netmask=255.0.0.0", "both"},
		{"-qubes-net:client_ip=10.0.0.2,gw=10.0.0.1,netmask=255.0.0.0,dns_0=x", "dns_0"},
	} {
		if _, err := ParseQubesNet(tc.arg); err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("ParseQubesNet(%q) = %v, want an error with %q", tc.arg, err, tc.want)
		}
	}
}

func TestSplit(t *testing.T) {
	argv := append(append([]string{}, libxlArgs[:25]...), netArg, "-qubes-audio:audiovm_xid=3")
	argv = append(argv, libxlArgs[25:]...)
	a, err := Split(argv)
	if err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(a.QEMU, libxlArgs) {
		t.Fatalf("QEMU args:\n%q\nwant libxl's without the stubdomain's own:\n%q", a.QEMU, libxlArgs)
	}
	if a.Net == nil || a.Net.ClientIP.String() != "10.137.0.5" || a.Net.Gateway.String() != "10.137.0.1" {
		t.Fatalf("Net = %+v", a.Net)
	}
	if a.Audio != "-qubes-audio:audiovm_xid=3" {
		t.Errorf("Audio = %q", a.Audio)
	}
	want := []NIC{{Device: "nic0", Model: "rtl8139", MAC: net.HardwareAddr{0, 0x16, 0x3e, 0x5e, 0x6c, 5}, Netdev: "net0", Ifname: "vif5.0-emu"}}
	if !reflect.DeepEqual(a.NICs, want) {
		t.Fatalf("NICs = %+v, want %+v", a.NICs, want)
	}
}

func TestSplitWithoutNetwork(t *testing.T) {
	// netvm none: no NIC, no -qubes-net (Qubes' stubdomain once crashed here).
	argv := []string{"-xen-domid", "7", "-nodefaults", "-net", "none", "-machine", "xenfv", "-m", "128"}
	a, err := Split(argv)
	if err != nil {
		t.Fatal(err)
	}
	if a.Net != nil || len(a.NICs) != 0 || !reflect.DeepEqual(a.QEMU, argv) {
		t.Fatalf("got %+v", a)
	}
}

func TestSplitRefuses(t *testing.T) {
	for _, tc := range []struct {
		name string
		argv []string
		want string
	}{
		{"net without nic", []string{"-m", "128", netArg}, "no emulated NIC"},
		{"two nets", []string{netArg, netArg}, "twice"},
		{"bad net", []string{"-qubes-net:client_ip=1"}, "not a usable"},
		{"restore", []string{"-incoming", RestoreMarker}, "restore"},
		{"bad mac", []string{"-device", "e1000,id=nic0,netdev=net0,mac=zz"}, "not a MAC"},
		{"tap without ifname", []string{"-netdev", "type=tap,id=net0"}, "ifname"},
		{"bad ifname", []string{"-netdev", "tap,id=net0,ifname=../../x"}, "interface name"},
		{"long ifname", []string{"-netdev", "tap,id=net0,ifname=vif12345.0-emulated"}, "15 characters"},
		{"nic without mac", []string{netArg, "-device", "e1000,id=nic0,netdev=net0", "-netdev", "tap,id=net0,ifname=tap0"}, "no mac"},
		{"shared netdev", []string{"-device", "e1000,netdev=n,mac=00:16:3e:00:00:01", "-device", "e1000,netdev=n,mac=00:16:3e:00:00:02"}, "two NICs"},
		{"bad device opts", []string{"-device", "e1000,=x"}, "no key"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := Split(tc.argv)
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("Split(%q) = %v, want an error with %q", tc.argv, err, tc.want)
			}
		})
	}
}

func TestParseOpts(t *testing.T) {
	first, opts, err := ParseOpts("tap,id=net0,ifname=a,,b,vhost", "type")
	if err != nil {
		t.Fatal(err)
	}
	if first != "tap" || opts["id"] != "net0" || opts["ifname"] != "a,b" || opts["vhost"] != "on" {
		t.Fatalf("got %q %v", first, opts)
	}
	first, _, err = ParseOpts("type=tap,id=net0", "type")
	if err != nil || first != "tap" {
		t.Fatalf("implied key: got %q, %v", first, err)
	}
	if _, _, err := ParseOpts("tap,type=tap", "type"); err == nil {
		t.Fatal("a driver given twice was accepted")
	}
	if _, _, err := ParseOpts("a,id=1,id=2", "driver"); err == nil {
		t.Fatal("a key given twice was accepted")
	}
}

func TestQEMUArgv(t *testing.T) {
	got := QEMUArgv("/usr/libexec/xen-qemu-system-i386", "/run/q,mp.sock", []string{"-xen-domid", "5"})
	want := []string{"/usr/libexec/xen-qemu-system-i386",
		"-chardev", "socket,id=qvm-qmp,path=/run/q,,mp.sock,server=on,wait=off",
		"-mon", "chardev=qvm-qmp,mode=control",
		"-xen-domid", "5"}
	if !reflect.DeepEqual(got, want) {
		t.Fatalf("got %q\nwant %q", got, want)
	}
	// The QMP chardev parses back to the socket path.
	_, opts, err := ParseOpts(got[2], "backend")
	if err != nil || opts["path"] != "/run/q,mp.sock" {
		t.Fatalf("chardev %q parses to %v, %v", got[2], opts, err)
	}
}

func TestBootFromDiscs(t *testing.T) {
	args := []string{"-xen-domid", "5", "-kernel", "/var/lib/qvm/vm-kernels/6.1/vmlinuz", "-initrd", "/var/lib/qvm/vm-kernels/6.1/initramfs", "-append", "root=/dev/xvda console=ttyS0"}
	if b := BootOf(args); !b.Kernel || !b.Initramfs {
		t.Errorf("BootOf = %+v", b)
	}
	got := BootFromDiscs(args, "/dev/xvde", "/dev/xvdf")
	want := []string{"-xen-domid", "5", "-kernel", "/dev/xvde", "-initrd", "/dev/xvdf", "-append", "root=/dev/xvda console=ttyS0"}
	if strings.Join(got, "|") != strings.Join(want, "|") {
		t.Errorf("BootFromDiscs = %q", got)
	}
	if args[3] != "/var/lib/qvm/vm-kernels/6.1/vmlinuz" {
		t.Error("BootFromDiscs changed its argument")
	}
	if b := BootOf([]string{"-boot", "dc", "-kernel"}); b.Kernel {
		t.Error("a -kernel without a value counts")
	}
}
