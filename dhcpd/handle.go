package dhcpd

import (
	"bytes"
	"errors"
	"fmt"
	"net"

	"github.com/insomniacslk/dhcp/dhcpv4"
	"github.com/insomniacslk/dhcp/iana"
)

// Reasons a request gets no reply. Handle and Respond wrap them with detail;
// test with errors.Is.
var (
	// ErrUnknownMAC: the client's hardware address has no lease here.
	ErrUnknownMAC = errors.New("unknown client MAC")
	// ErrMalformed: the packet breaks the protocol (bad headers, bad
	// options, impossible field combinations).
	ErrMalformed = errors.New("malformed packet")
	// ErrNotForUs: a well-formed packet this server must not answer, such
	// as a REQUEST for another server or a reply sent by another server.
	ErrNotForUs = errors.New("not for this server")
)

// maxClientIDLen bounds the client identifier echoed back (RFC 6842): one
// option's worth. Longer identifiers (RFC 3396 concatenation) are not echoed.
const maxClientIDLen = 255

// Outcome says what Handle did with a request that did not fail.
type Outcome int

// Outcomes of Handle, for counting and logging.
const (
	Offered  Outcome = iota + 1 // DISCOVER answered with OFFER
	Acked                       // REQUEST answered with ACK (lease given)
	Renewed                     // REQUEST with ciaddr (renewing/rebinding) answered with ACK
	Naked                       // REQUEST for a wrong address answered with NAK
	Informed                    // INFORM answered with ACK (no lease)
	Released                    // RELEASE: nothing to answer
	Declined                    // DECLINE: nothing to answer; the address is in use elsewhere
)

var outcomeNames = map[Outcome]string{
	Offered: "offer", Acked: "ack", Renewed: "renew", Naked: "nak",
	Informed: "inform", Released: "release", Declined: "decline",
}

func (o Outcome) String() string {
	if s, ok := outcomeNames[o]; ok {
		return s
	}
	return fmt.Sprintf("outcome(%d)", int(o))
}

// Handle decides the answer to one parsed request. It has no side effects:
// it reads the fixed leases and returns the reply (nil when the request
// needs none, as for RELEASE and DECLINE), the outcome, or an error wrapping
// ErrUnknownMAC, ErrMalformed or ErrNotForUs when the request gets no reply.
func (s *Server) Handle(req *dhcpv4.DHCPv4) (*dhcpv4.DHCPv4, Outcome, error) {
	if req == nil {
		return nil, 0, fmt.Errorf("%w: no packet", ErrMalformed)
	}
	if req.OpCode != dhcpv4.OpcodeBootRequest {
		return nil, 0, fmt.Errorf("%w: op %v is not BOOTREQUEST", ErrNotForUs, req.OpCode)
	}
	if req.HWType != iana.HWTypeEthernet || len(req.ClientHWAddr) != 6 {
		return nil, 0, fmt.Errorf("%w: hardware type %d length %d, want Ethernet (1, 6)", ErrMalformed, uint16(req.HWType), len(req.ClientHWAddr))
	}
	mt := req.MessageType()
	if mt == dhcpv4.MessageTypeNone {
		return nil, 0, fmt.Errorf("%w: no DHCP message type (plain BOOTP is not served)", ErrMalformed)
	}
	key, _ := keyOf(req.ClientHWAddr)
	e, ok := s.leases[key]
	if !ok {
		return nil, 0, fmt.Errorf("%w: %s sent %v", ErrUnknownMAC, req.ClientHWAddr, mt)
	}
	ciaddr := ipv4(req.ClientIPAddr)
	hasCiaddr := ciaddr != nil && !ciaddr.IsUnspecified()
	serverID, hasServerID, err := optionIP(req, dhcpv4.OptionServerIdentifier)
	if err != nil {
		return nil, 0, err
	}
	requested, hasRequested, err := optionIP(req, dhcpv4.OptionRequestedIPAddress)
	if err != nil {
		return nil, 0, err
	}
	ours := !hasServerID || serverID.Equal(s.serverIP)

	switch mt {
	case dhcpv4.MessageTypeDiscover:
		// Any requested address is only a hint; the VM has one address.
		return s.reply(req, e, dhcpv4.MessageTypeOffer), Offered, nil

	case dhcpv4.MessageTypeRequest:
		switch {
		case hasServerID:
			// SELECTING: the client answers an OFFER; it names the server it
			// chose and the address, and has none yet.
			if !ours {
				return nil, 0, fmt.Errorf("%w: %s chose server %v", ErrNotForUs, req.ClientHWAddr, serverID)
			}
			if !hasRequested || hasCiaddr {
				return nil, 0, fmt.Errorf("%w: REQUEST in SELECTING state needs option 50 and no ciaddr", ErrMalformed)
			}
			if !requested.Equal(e.lease.IP) {
				return s.nak(req, "requested address is not this client's"), Naked, nil
			}
			return s.reply(req, e, dhcpv4.MessageTypeAck), Acked, nil
		case hasRequested:
			// INIT-REBOOT: the client checks the address it remembers.
			if hasCiaddr {
				return nil, 0, fmt.Errorf("%w: REQUEST in INIT-REBOOT state must not carry ciaddr", ErrMalformed)
			}
			if !requested.Equal(e.lease.IP) {
				return s.nak(req, "requested address is not this client's"), Naked, nil
			}
			return s.reply(req, e, dhcpv4.MessageTypeAck), Acked, nil
		case hasCiaddr:
			// RENEWING (unicast to us) or REBINDING (broadcast): the
			// client extends the lease on the address it uses.
			if !ciaddr.Equal(e.lease.IP) {
				return s.nak(req, "client address is not this client's"), Naked, nil
			}
			return s.reply(req, e, dhcpv4.MessageTypeAck), Renewed, nil
		default:
			return nil, 0, fmt.Errorf("%w: REQUEST with neither server id, requested address nor ciaddr", ErrMalformed)
		}

	case dhcpv4.MessageTypeDecline:
		if !hasServerID || !ours {
			return nil, 0, fmt.Errorf("%w: DECLINE for server %v", ErrNotForUs, serverID)
		}
		return nil, Declined, nil

	case dhcpv4.MessageTypeRelease:
		if hasServerID && !ours {
			return nil, 0, fmt.Errorf("%w: RELEASE for server %v", ErrNotForUs, serverID)
		}
		return nil, Released, nil

	case dhcpv4.MessageTypeInform:
		// The client has an address (configured by other means) and asks
		// for the rest: no yiaddr, no lease time (RFC 2131 section 3.4).
		if !hasCiaddr {
			return nil, 0, fmt.Errorf("%w: INFORM without ciaddr", ErrMalformed)
		}
		return s.inform(req, e), Informed, nil

	default:
		return nil, 0, fmt.Errorf("%w: message type %v from a client", ErrNotForUs, mt)
	}
}

// optionIP reads a 4-byte address option; a present option of another
// length is malformed.
func optionIP(req *dhcpv4.DHCPv4, code dhcpv4.OptionCode) (net.IP, bool, error) {
	v := req.Options.Get(code)
	if v == nil {
		return nil, false, nil
	}
	if len(v) != net.IPv4len {
		return nil, false, fmt.Errorf("%w: option %d has length %d, want 4", ErrMalformed, code.Code(), len(v))
	}
	return net.IP(v), true, nil
}

// base starts a reply that echoes the request's transaction fields.
func (s *Server) base(req *dhcpv4.DHCPv4, mt dhcpv4.MessageType) *dhcpv4.DHCPv4 {
	r := &dhcpv4.DHCPv4{
		OpCode:        dhcpv4.OpcodeBootReply,
		HWType:        req.HWType,
		TransactionID: req.TransactionID,
		Flags:         req.Flags,
		ClientIPAddr:  net.IPv4zero,
		YourIPAddr:    net.IPv4zero,
		ServerIPAddr:  net.IPv4zero,
		GatewayIPAddr: req.GatewayIPAddr,
		ClientHWAddr:  req.ClientHWAddr,
		Options:       make(dhcpv4.Options, 12),
	}
	r.Options[dhcpv4.OptionDHCPMessageType.Code()] = messageTypeBytes[mt]
	r.Options[dhcpv4.OptionServerIdentifier.Code()] = s.serverIP
	if id := req.Options.Get(dhcpv4.OptionClientIdentifier); id != nil && len(id) <= maxClientIDLen {
		r.Options[dhcpv4.OptionClientIdentifier.Code()] = id
	}
	return r
}

// messageTypeBytes are the option 53 values of the replies.
var messageTypeBytes = map[dhcpv4.MessageType][]byte{
	dhcpv4.MessageTypeOffer: {byte(dhcpv4.MessageTypeOffer)},
	dhcpv4.MessageTypeAck:   {byte(dhcpv4.MessageTypeAck)},
	dhcpv4.MessageTypeNak:   {byte(dhcpv4.MessageTypeNak)},
}

// reply builds an OFFER or ACK carrying the full lease.
func (s *Server) reply(req *dhcpv4.DHCPv4, e *entry, mt dhcpv4.MessageType) *dhcpv4.DHCPv4 {
	r := s.base(req, mt)
	r.YourIPAddr = e.lease.IP
	if mt == dhcpv4.MessageTypeAck {
		r.ClientIPAddr = req.ClientIPAddr
	}
	s.addConfig(req, r, e)
	for code, v := range e.times {
		r.Options[code] = v
	}
	return r
}

// inform builds the ACK to an INFORM: configuration without a lease.
func (s *Server) inform(req *dhcpv4.DHCPv4, e *entry) *dhcpv4.DHCPv4 {
	r := s.base(req, dhcpv4.MessageTypeAck)
	r.ClientIPAddr = req.ClientIPAddr
	s.addConfig(req, r, e)
	return r
}

// addConfig adds the lease's network options, and the classless routes
// when the client asked for them (RFC 3442 says not to send them unasked).
func (s *Server) addConfig(req, r *dhcpv4.DHCPv4, e *entry) {
	for code, v := range e.options {
		r.Options[code] = v
	}
	if requested(req, dhcpv4.OptionClasslessStaticRoute) {
		r.Options[dhcpv4.OptionClasslessStaticRoute.Code()] = e.routes
	}
	if requested(req, optionMSClasslessStaticRoute) {
		r.Options[optionMSClasslessStaticRoute.Code()] = e.routes
	}
}

// requested reports whether the client's parameter request list (option
// 55) names code; a client that sends no list is taken to want everything
// (RFC 2131 section 3.5).
func requested(req *dhcpv4.DHCPv4, code dhcpv4.OptionCode) bool {
	prl, ok := req.Options[dhcpv4.OptionParameterRequestList.Code()]
	if !ok {
		return true
	}
	return bytes.IndexByte(prl, code.Code()) >= 0
}

// optionMSClasslessStaticRoute is option 249, Microsoft's pre-RFC 3442 code
// for the same routes; Windows asks for it instead of 121.
var optionMSClasslessStaticRoute = dhcpv4.GenericOptionCode(249)

// nak builds a NAK: no address, no configuration (RFC 2131 table 3).
func (s *Server) nak(req *dhcpv4.DHCPv4, why string) *dhcpv4.DHCPv4 {
	r := s.base(req, dhcpv4.MessageTypeNak)
	r.Options[dhcpv4.OptionMessage.Code()] = []byte(why)
	return r
}
