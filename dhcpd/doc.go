// Package dhcpd is a DHCPv4 responder that hands each VM its fixed address.
//
// A Server is bound to one network interface and knows a fixed list of
// leases, one per MAC address: the VM's IP, netmask, gateway and DNS servers,
// as the VM's definition says. It answers only those MACs; anything else
// (unknown clients, malformed or unexpected packets) gets no reply, a log
// line and a counter in Stats. Log lines about single packets are
// rate-limited at every level (the first few each minute, then one summary
// line with counts), so no packet pattern can make the log grow faster
// than a fixed bound. There is no address pool and no lease
// file: nothing can run out and nothing is lost on restart.
//
// It replaces the DHCP server that Qubes OS runs inside an HVM's stub domain
// and can run on a VM's backend interface in dom0 or a net VM, so it faces
// untrusted guests:
//
//   - The packet path (Respond and Handle) is a pure function of the bytes
//     received: it keeps no per-client state and allocates memory bounded by
//     the packet size, so a guest cannot make it grow.
//   - Serve opens its sockets, then drops every privilege (it changes to a
//     user and group of its own, UserFor the interface's index, which
//     clears all capabilities on every thread), sets no_new_privs and
//     installs a seccomp filter on all threads that allows only the system
//     calls of the serve loop and the Go runtime, some on some arguments
//     only: it sends only on its packet socket and only without an
//     address (so only on its own interface), writes only to its logs and
//     the runtime's descriptors, and signals only itself. Any other system
//     call kills the process with SIGSYS (see Sandbox).
//
// # Addressing
//
// Qubes gives VMs /32 addresses (netmask 255.255.255.255) with a gateway
// outside that "subnet". Replies therefore carry the router option (3) and,
// when the client asks for it, classless static routes (option 121, and the
// older Microsoft option 249) with an on-link host route to the gateway and
// the default route through it.
//
// The interface the server runs on may have no IPv4 address at all (the
// stub domain's bridge has none) or may have the gateway's address (a
// routed backend interface in dom0). To behave the same in both cases the
// server sends and receives on a packet socket (AF_PACKET, SOCK_RAW) and
// builds the Ethernet, IPv4 and UDP headers itself:
//
//   - Its server identifier (option 54) and the source address of its
//     replies is the address given to New; the qvm verb passes the VM's
//     gateway. Clients that renew send their unicast request there: on a
//     routed backend that address is local and the request arrives; on the
//     stub domain's bridge nobody answers for it and the client rebinds by
//     broadcast after T2, which the server answers the same way.
//   - Replies go where RFC 2131 section 4.1 says: to the relay (giaddr) on
//     port 67 when there is one, broadcast for NAKs and when the client sets
//     the broadcast flag, to ciaddr when the client has an address, and
//     otherwise to the offered address at the client's hardware address, so
//     no ARP entry is needed.
//   - While it runs, the server also holds a UDP socket on port 67 of the
//     interface whose filter drops everything. It only keeps the kernel from
//     answering a unicast renewal with "port unreachable" on interfaces that
//     have the server's address.
package dhcpd
