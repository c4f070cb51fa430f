package dmargs

import (
	"strings"
	"testing"
)

// FuzzParseQubesNet: any input gives a value or an error, never a panic,
// and an accepted value has the required addresses.
func FuzzParseQubesNet(f *testing.F) {
	for _, s := range []string{
		netArg,
		"-qubes-net:client_ip=10.0.0.2,gw=10.0.0.1,netmask=255.255.255.0,dns_0=",
		"-qubes-net:",
		"-qubes-net:,,,=",
		"-qubes-net:client_ip=10.137.0.5,gw=10.137.0.5,netmask=255.255.255.255",
	} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		n, err := ParseQubesNet(s)
		if err != nil {
			return
		}
		if !n.ClientIP.Is4() || !n.Gateway.Is4() || n.Netmask == nil || len(n.DNS) > 2 {
			t.Fatalf("ParseQubesNet(%q) accepted %+v", s, n)
		}
	})
}

// FuzzSplit: a NUL-separated argument list is split without panicking;
// what is accepted keeps every QEMU argument and names valid taps.
func FuzzSplit(f *testing.F) {
	f.Add(strings.Join(append(append([]string{}, libxlArgs...), netArg), "\x00"))
	f.Add("-device\x00rtl8139,netdev=n,mac=00:16:3e:00:00:01\x00-netdev\x00tap,id=n,ifname=t0\x00" + netArg)
	f.Add("-netdev")
	f.Add("-device\x00,,,")
	f.Fuzz(func(t *testing.T, s string) {
		argv := strings.Split(s, "\x00")
		a, err := Split(argv)
		if err != nil {
			return
		}
		own := 0
		for _, x := range argv {
			if strings.HasPrefix(x, QubesNetPrefix) || strings.HasPrefix(x, QubesAudioPrefix) {
				own++
			}
		}
		if len(a.QEMU)+own < len(argv) {
			t.Fatalf("Split(%q) lost arguments: QEMU %q", argv, a.QEMU)
		}
		for _, n := range a.NICs {
			if CheckIfname(n.Ifname) != nil {
				t.Fatalf("accepted bad tap name %q", n.Ifname)
			}
		}
		if a.Net != nil && (len(a.NICs) == 0 || a.NICs[0].MAC == nil) {
			t.Fatalf("accepted -qubes-net without a NIC with a MAC: %+v", a)
		}
	})
}

// FuzzSorted: keys and values from a fuzzed list never panic Sorted, and
// an accepted result has one value per key.
func FuzzSorted(f *testing.F) {
	f.Add("001\x00a\x00002\x00b")
	f.Add("1\x00a\x00001\x00b")
	f.Add("0\x00x")
	f.Fuzz(func(t *testing.T, s string) {
		parts := strings.Split(s, "\x00")
		m := map[string]string{}
		for i := 0; i+1 < len(parts); i += 2 {
			m[parts[i]] = parts[i+1]
		}
		got, err := Sorted(m)
		if err == nil && len(got) != len(m) {
			t.Fatalf("Sorted(%v) = %d values", m, len(got))
		}
	})
}
