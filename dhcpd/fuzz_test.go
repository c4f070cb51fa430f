package dhcpd

import (
	"bytes"
	"errors"
	"net"
	"testing"

	"github.com/insomniacslk/dhcp/dhcpv4"
)

// maxReply bounds every reply: the fixed options plus one echoed client
// identifier fit well below it, whatever the request held.
const maxReply = 1024

// seedPayloads are DHCP messages, good and bad, for both fuzz targets.
func seedPayloads(t testing.TB) [][]byte {
	sid := withOpt(dhcpv4.OptServerIdentifier(testGW))
	good := [][]byte{
		request(t, dhcpv4.MessageTypeDiscover).ToBytes(),
		request(t, dhcpv4.MessageTypeDiscover, dhcpv4.WithRequestedOptions(dhcpv4.OptionClasslessStaticRoute, dhcpv4.OptionRouter)).ToBytes(),
		request(t, dhcpv4.MessageTypeRequest, sid, withOpt(dhcpv4.OptRequestedIPAddress(testIP))).ToBytes(),
		request(t, dhcpv4.MessageTypeRequest, withOpt(dhcpv4.OptRequestedIPAddress(net.IPv4(1, 1, 1, 1)))).ToBytes(),
		request(t, dhcpv4.MessageTypeRequest, dhcpv4.WithClientIP(testIP)).ToBytes(),
		request(t, dhcpv4.MessageTypeInform, dhcpv4.WithClientIP(testIP)).ToBytes(),
		request(t, dhcpv4.MessageTypeRelease, sid, dhcpv4.WithClientIP(testIP)).ToBytes(),
		request(t, dhcpv4.MessageTypeDecline, sid, withOpt(dhcpv4.OptRequestedIPAddress(testIP))).ToBytes(),
		request(t, dhcpv4.MessageTypeDiscover, dhcpv4.WithGatewayIP(net.IPv4(10, 0, 0, 1))).ToBytes(),
		request(t, dhcpv4.MessageTypeDiscover, dhcpv4.WithHwAddr(otherMAC)).ToBytes(),
	}
	disc := good[0]
	header := disc[:240] // fixed header and magic cookie
	withOptions := func(opts ...byte) []byte {
		return append(append(append([]byte(nil), header...), opts...), 255)
	}
	repeat := func(code byte, n int) []byte { // n instances of a 255-byte option
		var b []byte
		for i := 0; i < n; i++ {
			b = append(b, code, 255)
			b = append(b, bytes.Repeat([]byte{121}, 255)...)
		}
		return b
	}
	overload := append([]byte(nil), header...)
	// Option overload (52) naming sname and file, both filled with
	// further overload options: a loop for a parser that follows them.
	for i := 44; i < 236; i += 3 {
		overload[i], overload[i+1], overload[i+2] = 52, 1, 3
	}
	overload = append(overload, 53, 1, 1, 52, 1, 3, 255)
	badCookie := append([]byte(nil), disc...)
	copy(badCookie[236:], []byte{1, 2, 3, 4})
	bad := [][]byte{
		nil,
		disc[:1],
		disc[:239],
		disc[:240],
		badCookie,
		withOptions(53, 1, 1, 55, 255),           // length past the end
		withOptions(53, 0),                       // empty message type
		withOptions(53, 2, 1, 1),                 // long message type
		withOptions(53, 1, 3, 54, 3, 10, 137, 0), // short server id
		append(withOptions(53, 1, 1), repeat(55, 5)...),                                  // data after End
		withOptions(append([]byte{53, 1, 1}, repeat(55, 5)...)...),                       // giant PRL
		withOptions(append([]byte{53, 1, 1}, repeat(61, 5)...)...),                       // giant client id
		withOptions(append([]byte{53, 1, 3, 50, 4, 10, 137, 0, 5}, repeat(61, 1)...)...), // 255-byte client id, echoed
		overload,
		bytes.Repeat([]byte{0xff}, 600),
		append(append([]byte(nil), disc...), make([]byte, 3000)...), // oversized
	}
	return append(good, bad...)
}

func checkOutcome(t *testing.T, err error) {
	t.Helper()
	if err == nil {
		return
	}
	n := 0
	for _, e := range []error{ErrMalformed, ErrNotForUs, ErrUnknownMAC} {
		if errors.Is(err, e) {
			n++
		}
	}
	if n != 1 {
		t.Fatalf("error %v wraps %d of the drop reasons, want exactly one", err, n)
	}
}

func FuzzHandle(f *testing.F) {
	for _, p := range seedPayloads(f) {
		f.Add(p)
	}
	s := newTestServer(f)
	f.Fuzz(func(t *testing.T, data []byte) {
		req, err := dhcpv4.FromBytes(data)
		if err != nil {
			return
		}
		reply, _, err := s.Handle(req)
		checkOutcome(t, err)
		if err != nil && reply != nil {
			t.Fatalf("reply together with error %v", err)
		}
		if reply == nil {
			return
		}
		b := reply.ToBytes()
		if mine := appendMessage(nil, reply); !bytes.Equal(mine, b) {
			t.Fatalf("appendMessage differs from ToBytes:\n% x\n% x", mine, b)
		}
		if len(b) > maxReply {
			t.Fatalf("reply of %d bytes", len(b))
		}
		if reply.TransactionID != req.TransactionID || reply.OpCode != dhcpv4.OpcodeBootReply {
			t.Fatalf("reply does not answer the request")
		}
		if y := reply.YourIPAddr; !y.IsUnspecified() && !y.Equal(testIP) {
			t.Fatalf("reply offers %v", y)
		}
	})
}

func FuzzRespond(f *testing.F) {
	for _, p := range seedPayloads(f) {
		f.Add(udpPacket(net.IPv4zero, net.IPv4bcast, 68, 67, p))
		f.Add(udpPacket(testIP, testGW, 68, 67, p))
	}
	f.Add([]byte{0x45})
	f.Add(udpPacket(net.IPv4zero, net.IPv4bcast, 68, 67, nil))
	s := newTestServer(f)
	from := net.HardwareAddr{2, 0, 0, 0, 0, 1}
	f.Fuzz(func(t *testing.T, pkt []byte) {
		resp, err := s.Respond(pkt, from)
		checkOutcome(t, err)
		if resp.Packet == nil {
			return
		}
		if err != nil {
			t.Fatalf("reply together with error %v", err)
		}
		if len(resp.Packet) > maxReply {
			t.Fatalf("reply of %d bytes", len(resp.Packet))
		}
		r := parseReply(t, resp.Packet)
		if !r.ipSum || !r.udpSumOK || !r.src.Equal(testGW) || r.sport != 67 {
			t.Fatalf("bad reply headers: %+v", r)
		}
		if y := r.msg.YourIPAddr; !y.IsUnspecified() && !y.Equal(testIP) {
			t.Fatalf("reply offers %v", y)
		}
		if len(resp.To) != 6 {
			t.Fatalf("link-layer destination %v", resp.To)
		}
	})
}
