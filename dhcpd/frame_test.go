package dhcpd

import (
	"encoding/binary"
	"errors"
	"net"
	"testing"

	"github.com/insomniacslk/dhcp/dhcpv4"
)

// udpPacket builds an IPv4/UDP packet as a client's kernel or raw socket
// would send it.
func udpPacket(src, dst net.IP, sport, dport uint16, payload []byte) []byte {
	p := make([]byte, 28+len(payload))
	p[0] = 0x45
	binary.BigEndian.PutUint16(p[2:], uint16(len(p)))
	p[8], p[9] = 64, 17
	copy(p[12:], src.To4())
	copy(p[16:], dst.To4())
	binary.BigEndian.PutUint16(p[10:], checksum(p[:20], 0))
	binary.BigEndian.PutUint16(p[20:], sport)
	binary.BigEndian.PutUint16(p[22:], dport)
	binary.BigEndian.PutUint16(p[24:], uint16(8+len(payload)))
	copy(p[28:], payload)
	return p
}

// parsedReply is a reply packet taken apart and checked like a client would.
type parsedReply struct {
	src, dst         net.IP
	sport, dport     uint16
	msg              *dhcpv4.DHCPv4
	ipSum, udpSumOK  bool
	totalLen, length int
}

func parseReply(t testing.TB, p []byte) parsedReply {
	t.Helper()
	if len(p) < 28 || p[0] != 0x45 || p[9] != 17 {
		t.Fatalf("reply is not a plain IPv4/UDP packet: % x", p[:min(len(p), 28)])
	}
	var r parsedReply
	r.totalLen = int(binary.BigEndian.Uint16(p[2:]))
	r.length = len(p)
	r.ipSum = checksum(p[:20], 0) == 0
	r.src, r.dst = net.IP(p[12:16]), net.IP(p[16:20])
	u := p[20:]
	r.sport, r.dport = binary.BigEndian.Uint16(u[0:]), binary.BigEndian.Uint16(u[2:])
	if int(binary.BigEndian.Uint16(u[4:])) != len(u) {
		t.Fatalf("UDP length %d, %d bytes", binary.BigEndian.Uint16(u[4:]), len(u))
	}
	var sum uint32
	for i := 12; i < 20; i += 2 {
		sum += uint32(p[i])<<8 | uint32(p[i+1])
	}
	sum += 17 + uint32(len(u))
	r.udpSumOK = checksum(u, sum) == 0
	m, err := dhcpv4.FromBytes(u[8:])
	if err != nil {
		t.Fatalf("reply payload does not parse: %v", err)
	}
	r.msg = m
	return r
}

func TestChecksumRFC1071(t *testing.T) {
	// The example of RFC 1071 section 3: one's complement sum ddf2.
	if got := checksum([]byte{0x00, 0x01, 0xf2, 0x03, 0xf4, 0xf5, 0xf6, 0xf7}, 0); got != ^uint16(0xddf2) {
		t.Fatalf("checksum = %#x, want %#x", got, ^uint16(0xddf2))
	}
	if got := checksum([]byte{0xff}, 0); got != ^uint16(0xff00) {
		t.Fatalf("odd-length checksum = %#x", got)
	}
}

func TestRespondDestinations(t *testing.T) {
	s := newTestServer(t)
	from := net.HardwareAddr{0x02, 0, 0, 0, 0, 0x42}
	zero, bcast := net.IPv4zero, net.IPv4bcast
	selecting := []dhcpv4.Modifier{withOpt(dhcpv4.OptServerIdentifier(testGW)), withOpt(dhcpv4.OptRequestedIPAddress(testIP))}
	relay := net.IPv4(10, 137, 0, 200).To4()
	tests := []struct {
		name      string
		mt        dhcpv4.MessageType
		mods      []dhcpv4.Modifier
		src, dst  net.IP
		sport     uint16
		wantIP    net.IP
		wantPort  uint16
		wantMAC   net.HardwareAddr
		wantReply dhcpv4.MessageType
	}{
		{"discover unicast-capable client", dhcpv4.MessageTypeDiscover, nil, zero, bcast, 68, testIP, 68, testMAC, dhcpv4.MessageTypeOffer},
		{"discover broadcast flag", dhcpv4.MessageTypeDiscover, []dhcpv4.Modifier{dhcpv4.WithBroadcast(true)}, zero, bcast, 68, bcast, 68, broadcastMAC, dhcpv4.MessageTypeOffer},
		{"request selecting", dhcpv4.MessageTypeRequest, selecting, zero, bcast, 68, testIP, 68, testMAC, dhcpv4.MessageTypeAck},
		{"renewing unicast to server", dhcpv4.MessageTypeRequest, []dhcpv4.Modifier{dhcpv4.WithClientIP(testIP)}, testIP, testGW, 68, testIP, 68, testMAC, dhcpv4.MessageTypeAck},
		{"rebinding broadcast", dhcpv4.MessageTypeRequest, []dhcpv4.Modifier{dhcpv4.WithClientIP(testIP)}, testIP, bcast, 68, testIP, 68, testMAC, dhcpv4.MessageTypeAck},
		{"nak is broadcast", dhcpv4.MessageTypeRequest, []dhcpv4.Modifier{withOpt(dhcpv4.OptRequestedIPAddress(net.IPv4(1, 2, 3, 4)))}, zero, bcast, 68, bcast, 68, broadcastMAC, dhcpv4.MessageTypeNak},
		{"inform to ciaddr", dhcpv4.MessageTypeInform, []dhcpv4.Modifier{dhcpv4.WithClientIP(testIP)}, testIP, bcast, 68, testIP, 68, testMAC, dhcpv4.MessageTypeAck},
		{"relayed", dhcpv4.MessageTypeDiscover, []dhcpv4.Modifier{dhcpv4.WithGatewayIP(relay)}, relay, bcast, 67, relay, 67, from, dhcpv4.MessageTypeOffer},
		{"relayed nak goes to relay", dhcpv4.MessageTypeRequest, []dhcpv4.Modifier{dhcpv4.WithGatewayIP(relay), withOpt(dhcpv4.OptRequestedIPAddress(net.IPv4(1, 2, 3, 4)))}, relay, testGW, 67, relay, 67, from, dhcpv4.MessageTypeNak},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			req := request(t, tc.mt, tc.mods...)
			resp, err := s.Respond(udpPacket(tc.src, tc.dst, tc.sport, 67, req.ToBytes()), from)
			if err != nil {
				t.Fatal(err)
			}
			if resp.To.String() != tc.wantMAC.String() {
				t.Errorf("link-layer destination %v, want %v", resp.To, tc.wantMAC)
			}
			r := parseReply(t, resp.Packet)
			if !r.ipSum || !r.udpSumOK {
				t.Errorf("checksums: IP ok %v, UDP ok %v", r.ipSum, r.udpSumOK)
			}
			if r.totalLen != r.length {
				t.Errorf("IP total length %d, packet %d bytes", r.totalLen, r.length)
			}
			if !r.src.Equal(testGW) || r.sport != 67 {
				t.Errorf("source %v:%d, want %v:67", r.src, r.sport, testGW)
			}
			if !r.dst.Equal(tc.wantIP) || r.dport != tc.wantPort {
				t.Errorf("destination %v:%d, want %v:%d", r.dst, r.dport, tc.wantIP, tc.wantPort)
			}
			if r.msg.MessageType() != tc.wantReply || r.msg.TransactionID != req.TransactionID {
				t.Errorf("reply %v xid %v, want %v xid %v", r.msg.MessageType(), r.msg.TransactionID, tc.wantReply, req.TransactionID)
			}
			if gi := r.msg.GatewayIPAddr; (tc.mods != nil && req.GatewayIPAddr != nil && !gi.Equal(req.GatewayIPAddr)) || len(r.msg.ClientHWAddr) != 6 {
				t.Errorf("giaddr %v / chaddr %v not echoed", gi, r.msg.ClientHWAddr)
			}
		})
	}
}

func TestRespondRejectsBadPackets(t *testing.T) {
	s := newTestServer(t)
	discover := request(t, dhcpv4.MessageTypeDiscover).ToBytes()
	good := udpPacket(net.IPv4zero, net.IPv4bcast, 68, 67, discover)
	if _, err := s.Respond(good, testMAC); err != nil {
		t.Fatalf("good packet: %v", err)
	}
	mutate := func(f func(p []byte) []byte) []byte {
		p := append([]byte(nil), good...)
		return f(p)
	}
	refix := func(p []byte) []byte { // recompute the IP header checksum
		p[10], p[11] = 0, 0
		binary.BigEndian.PutUint16(p[10:], checksum(p[:int(p[0]&0xf)*4], 0))
		return p
	}
	badCookie := append([]byte(nil), discover...)
	badCookie[236] = 0
	tests := []struct {
		name string
		pkt  []byte
		want error
	}{
		{"empty", nil, ErrMalformed},
		{"short IP header", good[:19], ErrMalformed},
		{"IPv6", mutate(func(p []byte) []byte { p[0] = 0x65; return refix(p) }), ErrMalformed},
		{"IHL too small", mutate(func(p []byte) []byte { p[0] = 0x44; return p }), ErrMalformed},
		{"total length past end", mutate(func(p []byte) []byte { binary.BigEndian.PutUint16(p[2:], uint16(len(p)+1)); return refix(p) }), ErrMalformed},
		{"truncated", good[:len(good)-10], ErrMalformed},
		{"bad IP checksum", mutate(func(p []byte) []byte { p[10] ^= 0xff; return p }), ErrMalformed},
		{"fragment", mutate(func(p []byte) []byte { p[6] = 0x20; return refix(p) }), ErrMalformed},
		{"TCP", mutate(func(p []byte) []byte { p[9] = 6; return refix(p) }), ErrNotForUs},
		{"to port 68", udpPacket(net.IPv4zero, net.IPv4bcast, 67, 68, discover), ErrNotForUs},
		{"UDP length too big", mutate(func(p []byte) []byte { binary.BigEndian.PutUint16(p[24:], uint16(len(p))); return p }), ErrMalformed},
		{"UDP length too small", mutate(func(p []byte) []byte { binary.BigEndian.PutUint16(p[24:], 7); return p }), ErrMalformed},
		{"to another host", udpPacket(net.IPv4zero, net.IPv4(192, 0, 2, 9), 68, 67, discover), ErrNotForUs},
		{"wrong magic cookie", udpPacket(net.IPv4zero, net.IPv4bcast, 68, 67, badCookie), ErrMalformed},
		{"DHCP header cut", udpPacket(net.IPv4zero, net.IPv4bcast, 68, 67, discover[:200]), ErrMalformed},
		{"no end option", udpPacket(net.IPv4zero, net.IPv4bcast, 68, 67, discover[:243]), ErrMalformed},
		{"option length past end", udpPacket(net.IPv4zero, net.IPv4bcast, 68, 67, append(append([]byte(nil), discover[:240]...), 53, 1, 1, 55, 200, 1, 2)), ErrMalformed},
	}
	for _, tc := range tests {
		resp, err := s.Respond(tc.pkt, testMAC)
		if !errors.Is(err, tc.want) || resp.Packet != nil {
			t.Errorf("%s: Respond = %d bytes, %v; want no reply and %v", tc.name, len(resp.Packet), err, tc.want)
		}
	}
	// Link-layer padding after the IP packet is ignored.
	padded := append(append([]byte(nil), good...), make([]byte, 18)...)
	if resp, err := s.Respond(padded, testMAC); err != nil || resp.Packet == nil {
		t.Errorf("padded packet: %v", err)
	}
	// A relayed request with no link-layer source cannot be answered.
	relayed := udpPacket(net.IPv4(10, 0, 0, 1), net.IPv4bcast, 67, 67, request(t, dhcpv4.MessageTypeDiscover, dhcpv4.WithGatewayIP(net.IPv4(10, 0, 0, 1))).ToBytes())
	if _, err := s.Respond(relayed, nil); !errors.Is(err, ErrMalformed) {
		t.Errorf("relayed without source MAC: %v", err)
	}
}
