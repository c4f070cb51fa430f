package consback

// Each console server runs as a user and group of its own, so that one
// taken over by its domain cannot signal, trace or read another, nor
// anything else of dom0's. The IDs are UIDBase + the served domain's ID:
// domain IDs are unique while a domain lives and below 0x7FF0, so the
// range ends below systemd's foreign UID range (0x7FFE0000), just above
// the DHCP servers' (see dhcpd.UIDBase), and needs no user database.
const UIDBase = 0x7FFD8000

// maxDomid bounds the domain IDs Xen gives (DOMID_FIRST_RESERVED).
const maxDomid = 0x7FF0

// UserFor is the user and group ID of the server of domain domid's
// consoles.
func UserFor(domid uint32) int {
	return UIDBase + int(domid%maxDomid)
}
