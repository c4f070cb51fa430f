package dhcpd

import (
	"bytes"
	"errors"
	"net"
	"testing"
	"time"

	"github.com/insomniacslk/dhcp/dhcpv4"
	"github.com/insomniacslk/dhcp/iana"
)

var (
	testMAC     = net.HardwareAddr{0x00, 0x16, 0x3e, 0x5e, 0x6c, 0x05}
	otherMAC    = net.HardwareAddr{0x00, 0x16, 0x3e, 0x5e, 0x6c, 0x99}
	testIP      = net.IPv4(10, 137, 0, 5).To4()
	testGW      = net.IPv4(10, 137, 0, 1).To4()
	testDNS     = []net.IP{net.IPv4(10, 139, 1, 1).To4(), net.IPv4(10, 139, 1, 2).To4()}
	testNetmask = net.CIDRMask(32, 32)
)

func testLease() Lease {
	return Lease{MAC: testMAC, IP: testIP, Netmask: testNetmask, Gateway: testGW, DNS: testDNS, Duration: time.Hour}
}

func newTestServer(t testing.TB) *Server {
	t.Helper()
	s, err := New("veth0", testGW, []Lease{testLease()}, nil)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

// request builds a client message of type mt from testMAC.
func request(t testing.TB, mt dhcpv4.MessageType, mods ...dhcpv4.Modifier) *dhcpv4.DHCPv4 {
	t.Helper()
	base := []dhcpv4.Modifier{
		dhcpv4.WithMessageType(mt),
		dhcpv4.WithHwAddr(testMAC),
		dhcpv4.WithTransactionID(dhcpv4.TransactionID{1, 2, 3, 4}),
	}
	m, err := dhcpv4.New(append(base, mods...)...)
	if err != nil {
		t.Fatal(err)
	}
	return m
}

func withOpt(o dhcpv4.Option) dhcpv4.Modifier { return dhcpv4.WithOption(o) }

func wantLeaseOptions(t *testing.T, r *dhcpv4.DHCPv4, withLeaseTime bool) {
	t.Helper()
	if got := r.SubnetMask(); !net.IP(got).Equal(net.IP(testNetmask)) {
		t.Errorf("netmask %v, want %v", net.IP(got), net.IP(testNetmask))
	}
	if got := r.Router(); len(got) != 1 || !got[0].Equal(testGW) {
		t.Errorf("router %v, want [%v]", got, testGW)
	}
	if got := r.DNS(); len(got) != 2 || !got[0].Equal(testDNS[0]) || !got[1].Equal(testDNS[1]) {
		t.Errorf("dns %v, want %v", got, testDNS)
	}
	if got := r.ServerIdentifier(); !got.Equal(testGW) {
		t.Errorf("server id %v, want %v", got, testGW)
	}
	lt := r.IPAddressLeaseTime(0)
	if withLeaseTime {
		if lt != time.Hour || r.IPAddressRenewalTime(0) != 30*time.Minute || r.IPAddressRebindingTime(0) != 52*time.Minute+30*time.Second {
			t.Errorf("lease/T1/T2 = %v/%v/%v, want 1h/30m/52m30s", lt, r.IPAddressRenewalTime(0), r.IPAddressRebindingTime(0))
		}
	} else if r.Options.Has(dhcpv4.OptionIPAddressLeaseTime) || r.Options.Has(dhcpv4.OptionRenewTimeValue) || r.Options.Has(dhcpv4.OptionRebindingTimeValue) {
		t.Errorf("reply carries lease times; it must not")
	}
}

func wantReply(t *testing.T, req, r *dhcpv4.DHCPv4, mt dhcpv4.MessageType) {
	t.Helper()
	if r == nil {
		t.Fatalf("no reply, want %v", mt)
	}
	if r.MessageType() != mt {
		t.Fatalf("reply type %v, want %v", r.MessageType(), mt)
	}
	if r.OpCode != dhcpv4.OpcodeBootReply || r.TransactionID != req.TransactionID || r.ClientHWAddr.String() != req.ClientHWAddr.String() {
		t.Errorf("reply op %v xid %v chaddr %v does not echo request (xid %v chaddr %v)", r.OpCode, r.TransactionID, r.ClientHWAddr, req.TransactionID, req.ClientHWAddr)
	}
	// Round trip through bytes, as a client would see it.
	if _, err := dhcpv4.FromBytes(r.ToBytes()); err != nil {
		t.Errorf("reply does not parse: %v", err)
	}
}

func TestDiscoverGetsOffer(t *testing.T) {
	s := newTestServer(t)
	req := request(t, dhcpv4.MessageTypeDiscover,
		dhcpv4.WithRequestedOptions(dhcpv4.OptionSubnetMask, dhcpv4.OptionRouter, dhcpv4.OptionDomainNameServer),
		withOpt(dhcpv4.OptClientIdentifier([]byte{1, 0, 0x16, 0x3e, 0x5e, 0x6c, 0x05})),
		withOpt(dhcpv4.OptRequestedIPAddress(net.IPv4(10, 0, 0, 9))))
	r, out, err := s.Handle(req)
	if err != nil || out != Offered {
		t.Fatalf("Handle = %v, %v; want offer", out, err)
	}
	wantReply(t, req, r, dhcpv4.MessageTypeOffer)
	if !r.YourIPAddr.Equal(testIP) {
		t.Errorf("yiaddr %v, want %v (the requested address is only a hint)", r.YourIPAddr, testIP)
	}
	wantLeaseOptions(t, r, true)
	if r.Options.Has(dhcpv4.OptionClasslessStaticRoute) {
		t.Errorf("option 121 sent although not requested")
	}
	if got := r.Options.Get(dhcpv4.OptionClientIdentifier); string(got) != "\x01\x00\x16\x3e\x5e\x6c\x05" {
		t.Errorf("client identifier not echoed: %x", got)
	}
}

func TestClasslessRoutesWhenRequested(t *testing.T) {
	s := newTestServer(t)
	for _, code := range []dhcpv4.OptionCode{dhcpv4.OptionClasslessStaticRoute, optionMSClasslessStaticRoute} {
		req := request(t, dhcpv4.MessageTypeDiscover, dhcpv4.WithRequestedOptions(dhcpv4.OptionRouter, code))
		r, _, err := s.Handle(req)
		if err != nil {
			t.Fatal(err)
		}
		// RFC 3442 encoding: width, significant octets of the
		// destination, router. Host route to the gateway on-link
		// (router 0.0.0.0), then the default route through it.
		want := []byte{32, 10, 137, 0, 1, 0, 0, 0, 0, 0, 10, 137, 0, 1}
		if got := r.Options.Get(code); !bytes.Equal(got, want) {
			t.Errorf("option %d = %v, want %v", code.Code(), got, want)
		}
		if !r.Options.Has(dhcpv4.OptionRouter) {
			t.Errorf("option 3 missing next to option %d", code.Code())
		}
	}
}

func TestRequestStates(t *testing.T) {
	s := newTestServer(t)
	wrong := net.IPv4(10, 137, 0, 6)
	tests := []struct {
		name    string
		mods    []dhcpv4.Modifier
		want    Outcome
		wantTyp dhcpv4.MessageType
		wantErr error
	}{
		{"selecting", []dhcpv4.Modifier{withOpt(dhcpv4.OptServerIdentifier(testGW)), withOpt(dhcpv4.OptRequestedIPAddress(testIP))}, Acked, dhcpv4.MessageTypeAck, nil},
		{"selecting wrong address", []dhcpv4.Modifier{withOpt(dhcpv4.OptServerIdentifier(testGW)), withOpt(dhcpv4.OptRequestedIPAddress(wrong))}, Naked, dhcpv4.MessageTypeNak, nil},
		{"selecting another server", []dhcpv4.Modifier{withOpt(dhcpv4.OptServerIdentifier(net.IPv4(10, 137, 0, 254))), withOpt(dhcpv4.OptRequestedIPAddress(testIP))}, 0, 0, ErrNotForUs},
		{"selecting without option 50", []dhcpv4.Modifier{withOpt(dhcpv4.OptServerIdentifier(testGW))}, 0, 0, ErrMalformed},
		{"selecting with ciaddr", []dhcpv4.Modifier{withOpt(dhcpv4.OptServerIdentifier(testGW)), withOpt(dhcpv4.OptRequestedIPAddress(testIP)), dhcpv4.WithClientIP(testIP)}, 0, 0, ErrMalformed},
		{"init-reboot", []dhcpv4.Modifier{withOpt(dhcpv4.OptRequestedIPAddress(testIP))}, Acked, dhcpv4.MessageTypeAck, nil},
		{"init-reboot wrong address", []dhcpv4.Modifier{withOpt(dhcpv4.OptRequestedIPAddress(wrong))}, Naked, dhcpv4.MessageTypeNak, nil},
		{"init-reboot with ciaddr", []dhcpv4.Modifier{withOpt(dhcpv4.OptRequestedIPAddress(testIP)), dhcpv4.WithClientIP(testIP)}, 0, 0, ErrMalformed},
		{"renewing", []dhcpv4.Modifier{dhcpv4.WithClientIP(testIP)}, Renewed, dhcpv4.MessageTypeAck, nil},
		{"rebinding wrong address", []dhcpv4.Modifier{dhcpv4.WithClientIP(wrong), dhcpv4.WithBroadcast(true)}, Naked, dhcpv4.MessageTypeNak, nil},
		{"no state", nil, 0, 0, ErrMalformed},
		{"bad server id length", []dhcpv4.Modifier{withOpt(dhcpv4.OptGeneric(dhcpv4.OptionServerIdentifier, []byte{10, 137, 0})), withOpt(dhcpv4.OptRequestedIPAddress(testIP))}, 0, 0, ErrMalformed},
		{"bad requested ip length", []dhcpv4.Modifier{withOpt(dhcpv4.OptGeneric(dhcpv4.OptionRequestedIPAddress, []byte{10, 137, 0, 5, 1}))}, 0, 0, ErrMalformed},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			req := request(t, dhcpv4.MessageTypeRequest, tc.mods...)
			r, out, err := s.Handle(req)
			if tc.wantErr != nil {
				if !errors.Is(err, tc.wantErr) || r != nil {
					t.Fatalf("Handle = %v, %v; want no reply and %v", r, err, tc.wantErr)
				}
				return
			}
			if err != nil || out != tc.want {
				t.Fatalf("Handle = %v, %v; want %v", out, err, tc.want)
			}
			wantReply(t, req, r, tc.wantTyp)
			switch tc.wantTyp {
			case dhcpv4.MessageTypeAck:
				if !r.YourIPAddr.Equal(testIP) {
					t.Errorf("yiaddr %v, want %v", r.YourIPAddr, testIP)
				}
				if !r.ClientIPAddr.Equal(req.ClientIPAddr) {
					t.Errorf("ciaddr %v, want the request's %v", r.ClientIPAddr, req.ClientIPAddr)
				}
				wantLeaseOptions(t, r, true)
			case dhcpv4.MessageTypeNak:
				if !r.YourIPAddr.IsUnspecified() || !r.ClientIPAddr.IsUnspecified() {
					t.Errorf("NAK carries addresses yiaddr %v ciaddr %v", r.YourIPAddr, r.ClientIPAddr)
				}
				for _, o := range []dhcpv4.OptionCode{dhcpv4.OptionSubnetMask, dhcpv4.OptionRouter, dhcpv4.OptionIPAddressLeaseTime, dhcpv4.OptionDomainNameServer} {
					if r.Options.Has(o) {
						t.Errorf("NAK carries option %v", o)
					}
				}
				if !r.ServerIdentifier().Equal(testGW) {
					t.Errorf("NAK server id %v", r.ServerIdentifier())
				}
			}
		})
	}
}

func TestDeclineReleaseInform(t *testing.T) {
	s := newTestServer(t)
	sid := withOpt(dhcpv4.OptServerIdentifier(testGW))
	other := withOpt(dhcpv4.OptServerIdentifier(net.IPv4(192, 0, 2, 1)))

	if r, out, err := s.Handle(request(t, dhcpv4.MessageTypeDecline, sid, withOpt(dhcpv4.OptRequestedIPAddress(testIP)))); r != nil || out != Declined || err != nil {
		t.Errorf("DECLINE = %v, %v, %v; want no reply, declined", r, out, err)
	}
	if _, _, err := s.Handle(request(t, dhcpv4.MessageTypeDecline, withOpt(dhcpv4.OptRequestedIPAddress(testIP)))); !errors.Is(err, ErrNotForUs) {
		t.Errorf("DECLINE without server id: %v, want ErrNotForUs", err)
	}
	if r, out, err := s.Handle(request(t, dhcpv4.MessageTypeRelease, sid, dhcpv4.WithClientIP(testIP))); r != nil || out != Released || err != nil {
		t.Errorf("RELEASE = %v, %v, %v; want no reply, released", r, out, err)
	}
	if _, _, err := s.Handle(request(t, dhcpv4.MessageTypeRelease, other, dhcpv4.WithClientIP(testIP))); !errors.Is(err, ErrNotForUs) {
		t.Errorf("RELEASE for another server: %v, want ErrNotForUs", err)
	}

	req := request(t, dhcpv4.MessageTypeInform, dhcpv4.WithClientIP(testIP))
	r, out, err := s.Handle(req)
	if err != nil || out != Informed {
		t.Fatalf("INFORM = %v, %v", out, err)
	}
	wantReply(t, req, r, dhcpv4.MessageTypeAck)
	if !r.YourIPAddr.IsUnspecified() {
		t.Errorf("INFORM ACK yiaddr %v, want 0.0.0.0", r.YourIPAddr)
	}
	wantLeaseOptions(t, r, false)
	if _, _, err := s.Handle(request(t, dhcpv4.MessageTypeInform)); !errors.Is(err, ErrMalformed) {
		t.Errorf("INFORM without ciaddr: %v, want ErrMalformed", err)
	}
}

func TestNoReply(t *testing.T) {
	s := newTestServer(t)
	unknown := request(t, dhcpv4.MessageTypeDiscover, dhcpv4.WithHwAddr(otherMAC))
	reply := request(t, dhcpv4.MessageTypeDiscover)
	reply.OpCode = dhcpv4.OpcodeBootReply
	bootp := request(t, dhcpv4.MessageTypeDiscover)
	bootp.Options.Del(dhcpv4.OptionDHCPMessageType)
	longHW := request(t, dhcpv4.MessageTypeDiscover, dhcpv4.WithHwAddr(append(append(net.HardwareAddr{}, testMAC...), 0, 0)))
	tokenRing := request(t, dhcpv4.MessageTypeDiscover, dhcpv4.WithHWType(iana.HWTypeIEEE802))
	for _, tc := range []struct {
		name string
		req  *dhcpv4.DHCPv4
		want error
	}{
		{"unknown MAC", unknown, ErrUnknownMAC},
		{"BOOTREPLY", reply, ErrNotForUs},
		{"plain BOOTP", bootp, ErrMalformed},
		{"8-byte chaddr", longHW, ErrMalformed},
		{"not Ethernet", tokenRing, ErrMalformed},
		{"OFFER from a client", request(t, dhcpv4.MessageTypeOffer), ErrNotForUs},
		{"ACK from a client", request(t, dhcpv4.MessageTypeAck), ErrNotForUs},
		{"nil", nil, ErrMalformed},
	} {
		r, _, err := s.Handle(tc.req)
		if r != nil || !errors.Is(err, tc.want) {
			t.Errorf("%s: Handle = %v, %v; want no reply, %v", tc.name, r, err, tc.want)
		}
	}
}

func TestNewRejectsBadLeases(t *testing.T) {
	mod := func(f func(*Lease)) []Lease { l := testLease(); f(&l); return []Lease{l} }
	for _, tc := range []struct {
		name   string
		server net.IP
		leases []Lease
	}{
		{"no leases", testGW, nil},
		{"no server ip", nil, []Lease{testLease()}},
		{"broadcast server ip", net.IPv4bcast, []Lease{testLease()}},
		{"short MAC", testGW, mod(func(l *Lease) { l.MAC = l.MAC[:5] })},
		{"multicast MAC", testGW, mod(func(l *Lease) { l.MAC = net.HardwareAddr{1, 0, 0x5e, 0, 0, 1} })},
		{"IPv6 address", testGW, mod(func(l *Lease) { l.IP = net.ParseIP("fd09::1") })},
		{"zero address", testGW, mod(func(l *Lease) { l.IP = net.IPv4zero })},
		{"no netmask", testGW, mod(func(l *Lease) { l.Netmask = nil })},
		{"holey netmask", testGW, mod(func(l *Lease) { l.Netmask = net.IPv4Mask(255, 0, 255, 0) })},
		{"no gateway", testGW, mod(func(l *Lease) { l.Gateway = nil })},
		{"gateway is client", testGW, mod(func(l *Lease) { l.Gateway = testIP })},
		{"bad DNS", testGW, mod(func(l *Lease) { l.DNS = []net.IP{net.ParseIP("::1")} })},
		{"tiny duration", testGW, mod(func(l *Lease) { l.Duration = time.Second })},
		{"bad hostname", testGW, mod(func(l *Lease) { l.Hostname = "a b" })},
		{"server is client", testIP, []Lease{testLease()}},
		{"duplicate MAC", testGW, []Lease{testLease(), testLease()}},
	} {
		if _, err := New("veth0", tc.server, tc.leases, nil); err == nil {
			t.Errorf("%s: New accepted it", tc.name)
		}
	}
	if _, err := New("", testGW, []Lease{testLease()}, nil); err == nil {
		t.Errorf("empty interface name accepted")
	}
	if _, err := New("a-very-long-interface-name", testGW, []Lease{testLease()}, nil); err == nil {
		t.Errorf("16-character interface name accepted")
	}
}

func TestParseHelpers(t *testing.T) {
	for in, want := range map[string]int{"255.255.255.255": 32, "/32": 32, "24": 24, "255.255.255.0": 24} {
		m, err := ParseNetmask(in)
		if ones, _ := m.Size(); err != nil || ones != want {
			t.Errorf("ParseNetmask(%q) = %v, %v; want /%d", in, m, err, want)
		}
	}
	for _, bad := range []string{"", "/0", "33", "255.0.255.0", "abc", "24x", "1.2.3"} {
		if _, err := ParseNetmask(bad); err == nil {
			t.Errorf("ParseNetmask(%q) accepted", bad)
		}
	}
	ips, err := ParseIPv4List("dns", "10.139.1.1, 10.139.1.2")
	if err != nil || len(ips) != 2 || !ips[1].Equal(testDNS[1]) {
		t.Errorf("ParseIPv4List = %v, %v", ips, err)
	}
	if _, err := ParseIPv4List("dns", "10.139.1.1,fd09::1"); err == nil {
		t.Errorf("ParseIPv4List accepted IPv6")
	}
	if _, err := ParseMAC("00:16:3e:5e:6c:05:00:00"); err == nil {
		t.Errorf("ParseMAC accepted an 8-byte address")
	}
}
