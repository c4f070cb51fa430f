package dhcpd

import (
	"net"
	"testing"

	"github.com/insomniacslk/dhcp/dhcpv4"
)

// BenchmarkRespond measures the packet path of one DISCOVER and one
// REQUEST (no sockets).
func BenchmarkRespond(b *testing.B) {
	s := newTestServer(b)
	from := net.HardwareAddr{2, 0, 0, 0, 0, 1}
	disc := udpPacket(net.IPv4zero, net.IPv4bcast, 68, 67, request(b, dhcpv4.MessageTypeDiscover,
		dhcpv4.WithRequestedOptions(dhcpv4.OptionSubnetMask, dhcpv4.OptionRouter, dhcpv4.OptionDomainNameServer, dhcpv4.OptionClasslessStaticRoute)).ToBytes())
	req := udpPacket(net.IPv4zero, net.IPv4bcast, 68, 67, request(b, dhcpv4.MessageTypeRequest,
		withOpt(dhcpv4.OptServerIdentifier(testGW)), withOpt(dhcpv4.OptRequestedIPAddress(testIP))).ToBytes())
	b.ReportAllocs()
	for b.Loop() {
		if r, err := s.Respond(disc, from); err != nil || r.Packet == nil {
			b.Fatal(err)
		}
		if r, err := s.Respond(req, from); err != nil || r.Packet == nil {
			b.Fatal(err)
		}
	}
}
