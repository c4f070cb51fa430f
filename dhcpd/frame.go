package dhcpd

import (
	"encoding/binary"
	"fmt"
	"net"
	"slices"

	"github.com/insomniacslk/dhcp/dhcpv4"
)

// UDP ports of DHCP (RFC 2131 section 4.1).
const (
	serverPort = 67
	clientPort = 68
)

const (
	ipv4HeaderLen = 20
	udpHeaderLen  = 8
	protoUDP      = 17
	flagBroadcast = 0x8000
	// maxPacket is the largest IPv4 packet read; longer ones are dropped.
	// DHCP messages are at most a few hundred bytes; 576 is the minimum
	// every client must accept and Ethernet carries 1500.
	maxPacket = 4096
)

var broadcastMAC = net.HardwareAddr{0xff, 0xff, 0xff, 0xff, 0xff, 0xff}

// datagram is what the request's IPv4 and UDP headers tell the responder.
type datagram struct {
	dst     net.IP
	payload []byte
}

// parseDatagram checks an IPv4 packet carrying UDP to the DHCP server port
// and returns its payload. The UDP checksum is not checked: on virtual
// links the sender's checksum may legitimately be left for offload, and
// the DHCP parser checks the content anyway.
func parseDatagram(p []byte) (datagram, error) {
	var d datagram
	if len(p) < ipv4HeaderLen {
		return d, fmt.Errorf("%w: %d bytes is shorter than an IPv4 header", ErrMalformed, len(p))
	}
	if p[0]>>4 != 4 {
		return d, fmt.Errorf("%w: IP version %d", ErrMalformed, p[0]>>4)
	}
	ihl := int(p[0]&0x0f) * 4
	total := int(binary.BigEndian.Uint16(p[2:4]))
	if ihl < ipv4HeaderLen || total < ihl+udpHeaderLen || total > len(p) {
		return d, fmt.Errorf("%w: IPv4 header length %d, total length %d, %d bytes received", ErrMalformed, ihl, total, len(p))
	}
	p = p[:total] // drop link-layer padding
	if checksum(p[:ihl], 0) != 0 {
		return d, fmt.Errorf("%w: bad IPv4 header checksum", ErrMalformed)
	}
	if frag := binary.BigEndian.Uint16(p[6:8]); frag&0x3fff != 0 {
		return d, fmt.Errorf("%w: IPv4 fragment", ErrMalformed)
	}
	if p[9] != protoUDP {
		return d, fmt.Errorf("%w: IP protocol %d is not UDP", ErrNotForUs, p[9])
	}
	u := p[ihl:]
	if port := binary.BigEndian.Uint16(u[2:4]); port != serverPort {
		return d, fmt.Errorf("%w: UDP port %d", ErrNotForUs, port)
	}
	ulen := int(binary.BigEndian.Uint16(u[4:6]))
	if ulen < udpHeaderLen || ulen > len(u) {
		return d, fmt.Errorf("%w: UDP length %d with %d bytes after the IP header", ErrMalformed, ulen, len(u))
	}
	d.dst = net.IP(p[16:20])
	d.payload = u[udpHeaderLen:ulen]
	return d, nil
}

// checksum is the Internet checksum (RFC 1071) of b added to sum.
func checksum(b []byte, sum uint32) uint16 {
	for len(b) >= 2 {
		sum += uint32(b[0])<<8 | uint32(b[1])
		b = b[2:]
	}
	if len(b) == 1 {
		sum += uint32(b[0]) << 8
	}
	for sum>>16 != 0 {
		sum = sum&0xffff + sum>>16
	}
	return ^uint16(sum)
}

// destination is where a reply goes: IP address, UDP port and the
// link-layer address of the next hop.
type destination struct {
	ip   net.IP
	port uint16
	mac  net.HardwareAddr
}

// replyDestination applies RFC 2131 section 4.1: relay first, then NAKs
// broadcast, then ciaddr, then the broadcast flag, else unicast to the
// offered address at the client's hardware address. from is the
// link-layer source of the request.
func replyDestination(req, reply *dhcpv4.DHCPv4, from net.HardwareAddr) (destination, error) {
	if gi := ipv4(req.GatewayIPAddr); gi != nil && !gi.IsUnspecified() {
		if len(from) != 6 {
			return destination{}, fmt.Errorf("%w: relayed request without a link-layer source", ErrMalformed)
		}
		return destination{ip: gi, port: serverPort, mac: from}, nil
	}
	if reply.MessageType() == dhcpv4.MessageTypeNak {
		return destination{ip: net.IPv4bcast, port: clientPort, mac: broadcastMAC}, nil
	}
	if ci := ipv4(req.ClientIPAddr); ci != nil && !ci.IsUnspecified() {
		return destination{ip: ci, port: clientPort, mac: req.ClientHWAddr}, nil
	}
	if req.Flags&flagBroadcast != 0 {
		return destination{ip: net.IPv4bcast, port: clientPort, mac: broadcastMAC}, nil
	}
	return destination{ip: ipv4(reply.YourIPAddr), port: clientPort, mac: req.ClientHWAddr}, nil
}

// encodeReply builds the IPv4 packet carrying m from src:67 to dst, in
// one allocation.
func encodeReply(src net.IP, dst destination, m *dhcpv4.DHCPv4) []byte {
	p := make([]byte, ipv4HeaderLen+udpHeaderLen, 640)
	p = appendMessage(p, m)
	writeHeaders(p, src, dst)
	return p
}

// appendMessage appends m in wire format, exactly as m.ToBytes() would
// write it (options in code order, RFC 3396 splitting, padded to the
// 300-byte BOOTP minimum), without its intermediate allocations.
func appendMessage(b []byte, m *dhcpv4.DHCPv4) []byte {
	start := len(b)
	b = append(b, byte(m.OpCode), byte(m.HWType), byte(len(m.ClientHWAddr)), m.HopCount)
	b = append(b, m.TransactionID[:]...)
	b = binary.BigEndian.AppendUint16(b, m.NumSeconds)
	b = binary.BigEndian.AppendUint16(b, m.Flags)
	for _, ip := range [...]net.IP{m.ClientIPAddr, m.YourIPAddr, m.ServerIPAddr, m.GatewayIPAddr} {
		var a [4]byte
		if ip4 := ipv4(ip); ip4 != nil {
			copy(a[:], ip4)
		}
		b = append(b, a[:]...)
	}
	var chaddr [16]byte
	copy(chaddr[:], m.ClientHWAddr)
	b = append(b, chaddr[:]...)
	var sname [64]byte
	copy(sname[:63], m.ServerHostName)
	b = append(b, sname[:]...)
	var file [128]byte
	copy(file[:127], m.BootFileName)
	b = append(b, file[:]...)
	b = append(b, 99, 130, 83, 99) // magic cookie

	var codeBuf [32]uint8
	codes := codeBuf[:0]
	agentInfo := false
	for c := range m.Options {
		switch c {
		case 0, 255: // pad and end are never written from the map
		case 82: // relay agent information goes last (RFC 3046)
			agentInfo = true
		default:
			codes = append(codes, c)
		}
	}
	slices.Sort(codes)
	if agentInfo {
		codes = append(codes, 82)
	}
	for _, c := range codes {
		v := m.Options[c]
		if len(v) == 0 {
			b = append(b, c, 0)
			continue
		}
		for len(v) > 0 { // RFC 3396: long options are split
			n := min(len(v), 255)
			b = append(b, c, byte(n))
			b = append(b, v[:n]...)
			v = v[n:]
		}
	}
	b = append(b, 255) // end
	for len(b)-start < 300 {
		b = append(b, 0)
	}
	return b
}

// writeHeaders fills the IPv4 and UDP headers at the start of p for the
// payload after them, from src:67 to dst.
func writeHeaders(p []byte, src net.IP, dst destination) {
	total := len(p)
	ip := p[:ipv4HeaderLen]
	clear(ip)
	ip[0] = 0x45 // version 4, header 5 words
	binary.BigEndian.PutUint16(ip[2:4], uint16(total))
	ip[8] = 64 // TTL
	ip[9] = protoUDP
	copy(ip[12:16], src.To4())
	copy(ip[16:20], dst.ip.To4())
	binary.BigEndian.PutUint16(ip[10:12], checksum(ip, 0))

	u := p[ipv4HeaderLen:]
	binary.BigEndian.PutUint16(u[0:2], serverPort)
	binary.BigEndian.PutUint16(u[2:4], dst.port)
	binary.BigEndian.PutUint16(u[4:6], uint16(len(u)))
	u[6], u[7] = 0, 0
	// Pseudo-header: source, destination, protocol, UDP length.
	var sum uint32
	for i := 12; i < 20; i += 2 {
		sum += uint32(ip[i])<<8 | uint32(ip[i+1])
	}
	sum += protoUDP + uint32(len(u))
	c := checksum(u, sum)
	if c == 0 {
		c = 0xffff // zero means "no checksum" in UDP
	}
	binary.BigEndian.PutUint16(u[6:8], c)
}

// Response is the answer to one received packet.
type Response struct {
	Packet  []byte           // IPv4 packet to send; nil when there is no reply
	To      net.HardwareAddr // link-layer destination of Packet
	Client  net.HardwareAddr // the request's client hardware address
	Type    dhcpv4.MessageType
	Outcome Outcome
	Lease   *Lease // the client's lease, when it has one
}

// Respond handles one IPv4 packet received on the interface (the bytes after
// the link-layer header) from link-layer address from. Like Handle it has no
// side effects; the error wraps ErrMalformed, ErrNotForUs or ErrUnknownMAC
// when there is no reply.
func (s *Server) Respond(pkt []byte, from net.HardwareAddr) (Response, error) {
	var r Response
	d, err := parseDatagram(pkt)
	if err != nil {
		return r, err
	}
	if !d.dst.Equal(net.IPv4bcast) && !d.dst.Equal(s.serverIP) {
		return r, fmt.Errorf("%w: sent to %v", ErrNotForUs, d.dst)
	}
	req, err := dhcpv4.FromBytes(d.payload)
	if err != nil {
		return r, fmt.Errorf("%w: %v", ErrMalformed, err)
	}
	r.Client, r.Type = req.ClientHWAddr, req.MessageType()
	reply, outcome, err := s.Handle(req)
	if err != nil {
		return r, err
	}
	r.Outcome = outcome
	if key, ok := keyOf(req.ClientHWAddr); ok {
		if e := s.leases[key]; e != nil {
			r.Lease = &e.lease
		}
	}
	if reply == nil {
		return r, nil
	}
	dst, err := replyDestination(req, reply, from)
	if err != nil {
		return r, err
	}
	r.Packet = encodeReply(s.serverIP, dst, reply)
	r.To = dst.mac
	return r, nil
}
