package dhcpd

import (
	"fmt"
	"log/slog"
	"net"
	"os"
	"sync"
	"syscall"
	"unsafe"

	"golang.org/x/net/bpf"
	"golang.org/x/sys/unix"
)

// packetConn is the server's packet socket on one interface plus the
// guard socket on UDP port 67.
//
// The packet socket is AF_PACKET, SOCK_RAW: the server reads and writes
// whole Ethernet frames and sends without a destination address, so the
// kernel sends on the interface the socket is bound to. (A SOCK_DGRAM
// packet socket needs an address on every send, and the kernel sends on
// whatever interface that address's sll_ifindex names, bound or not: a
// compromised server could put frames on any interface of its network
// namespace. The sandbox allows sendto on this socket only without an
// address.)
type packetConn struct {
	f       *os.File
	rc      syscall.RawConn
	fd      int // the packet socket, for the sandbox's rules
	ifindex int
	mac     net.HardwareAddr // the interface's, the source of replies
	guard   int              // UDP socket holding port 67, or -1
	once    sync.Once
	rbuf    []byte // frame being read; only Read uses it
	wbuf    []byte // frame being written; only Write uses it
}

func htons(v uint16) uint16 { return v<<8 | v>>8 }

// ethHeaderLen is the Ethernet header SOCK_RAW reads and writes:
// destination, source, EtherType.
const ethHeaderLen = 14

// requestFilter passes only what can be a DHCP request: IPv4 frames to
// this host (unicast or broadcast, not our own outgoing frames),
// unfragmented UDP to port 67. The kernel drops the rest before it reaches
// the process. Offsets are from the start of the Ethernet header.
func requestFilter() ([]bpf.RawInstruction, error) {
	const drop = 16
	const ip = ethHeaderLen
	prog := []bpf.Instruction{
		/* 0 */ bpf.LoadExtension{Num: bpf.ExtType},
		/* 1 */ bpf.JumpIf{Cond: bpf.JumpEqual, Val: unix.PACKET_HOST, SkipTrue: 1},
		/* 2 */ bpf.JumpIf{Cond: bpf.JumpNotEqual, Val: unix.PACKET_BROADCAST, SkipTrue: drop - 3},
		/* 3 */ bpf.LoadAbsolute{Off: 12, Size: 2},
		/* 4 */ bpf.JumpIf{Cond: bpf.JumpNotEqual, Val: unix.ETH_P_IP, SkipTrue: drop - 5},
		/* 5 */ bpf.LoadAbsolute{Off: ip, Size: 1},
		/* 6 */ bpf.ALUOpConstant{Op: bpf.ALUOpAnd, Val: 0xf0},
		/* 7 */ bpf.JumpIf{Cond: bpf.JumpNotEqual, Val: 0x40, SkipTrue: drop - 8},
		/* 8 */ bpf.LoadAbsolute{Off: ip + 9, Size: 1},
		/* 9 */ bpf.JumpIf{Cond: bpf.JumpNotEqual, Val: protoUDP, SkipTrue: drop - 10},
		/* 10 */ bpf.LoadAbsolute{Off: ip + 6, Size: 2},
		/* 11 */ bpf.JumpIf{Cond: bpf.JumpBitsSet, Val: 0x3fff, SkipTrue: drop - 12},
		/* 12 */ bpf.LoadMemShift{Off: ip},
		/* 13 */ bpf.LoadIndirect{Off: ip + 2, Size: 2},
		/* 14 */ bpf.JumpIf{Cond: bpf.JumpNotEqual, Val: serverPort, SkipTrue: drop - 15},
		/* 15 */ bpf.RetConstant{Val: 0xffffffff},
		/* 16 */ bpf.RetConstant{Val: 0},
	}
	return bpf.Assemble(prog)
}

// attachFilter sets a classic BPF socket filter on fd.
func attachFilter(fd int, raw []bpf.RawInstruction) error {
	if len(raw) == 0 {
		return fmt.Errorf("empty socket filter")
	}
	f := make([]unix.SockFilter, len(raw))
	for i, r := range raw {
		f[i] = unix.SockFilter{Code: r.Op, Jt: r.Jt, Jf: r.Jf, K: r.K}
	}
	prog := unix.SockFprog{Len: uint16(len(f)), Filter: &f[0]}
	return unix.SetsockoptSockFprog(fd, unix.SOL_SOCKET, unix.SO_ATTACH_FILTER, &prog)
}

// listen opens the packet socket on ifname (needs CAP_NET_RAW) and the
// port 67 guard (best effort; binding port 67 needs CAP_NET_BIND_SERVICE).
func listen(ifname string, log *slog.Logger) (*packetConn, error) {
	ifi, err := net.InterfaceByName(ifname)
	if err != nil {
		return nil, fmt.Errorf("dhcpd: interface %s: %w", ifname, err)
	}
	filter, err := requestFilter()
	if err != nil {
		return nil, fmt.Errorf("dhcpd on %s: socket filter: %w", ifname, err)
	}
	// Protocol 0 receives nothing until bind, so no frame gets in before
	// the filter is attached.
	if len(ifi.HardwareAddr) != 6 {
		return nil, fmt.Errorf("dhcpd: interface %s has link-layer address %q: DHCP is served on Ethernet interfaces only", ifname, ifi.HardwareAddr)
	}
	fd, err := unix.Socket(unix.AF_PACKET, unix.SOCK_RAW|unix.SOCK_NONBLOCK|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		return nil, fmt.Errorf("dhcpd on %s: packet socket (needs CAP_NET_RAW): %w", ifname, err)
	}
	if err := attachFilter(fd, filter); err != nil {
		unix.Close(fd)
		return nil, fmt.Errorf("dhcpd on %s: attach socket filter: %w", ifname, err)
	}
	if err := unix.Bind(fd, &unix.SockaddrLinklayer{Protocol: htons(unix.ETH_P_IP), Ifindex: ifi.Index}); err != nil {
		unix.Close(fd)
		return nil, fmt.Errorf("dhcpd on %s: bind packet socket: %w", ifname, err)
	}
	f := os.NewFile(uintptr(fd), "dhcpd-packet-"+ifname)
	rc, err := f.SyscallConn()
	if err != nil {
		f.Close()
		return nil, fmt.Errorf("dhcpd on %s: %w", ifname, err)
	}
	c := &packetConn{f: f, rc: rc, fd: fd, ifindex: ifi.Index, mac: ifi.HardwareAddr, guard: -1,
		rbuf: make([]byte, ethHeaderLen+maxPacket), wbuf: make([]byte, 0, ethHeaderLen+maxPacket)}
	if g, err := openGuard(ifname); err != nil {
		log.Debug("no UDP port 67 guard: the kernel may answer unicast renewals with port unreachable", "err", err)
	} else {
		c.guard = g
	}
	return c, nil
}

// openGuard binds UDP port 67 on ifname with a filter that drops every
// datagram: the socket exists only so that the kernel, finding a listener,
// does not send ICMP port unreachable for requests the packet socket
// answers.
func openGuard(ifname string) (int, error) {
	fd, err := unix.Socket(unix.AF_INET, unix.SOCK_DGRAM|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		return -1, err
	}
	dropAll, err := bpf.Assemble([]bpf.Instruction{bpf.RetConstant{Val: 0}})
	if err == nil {
		err = attachFilter(fd, dropAll)
	}
	if err == nil {
		err = unix.SetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_REUSEADDR, 1)
	}
	if err == nil {
		err = unix.BindToDevice(fd, ifname)
	}
	if err == nil {
		err = unix.Bind(fd, &unix.SockaddrInet4{Port: serverPort})
	}
	if err != nil {
		unix.Close(fd)
		return -1, err
	}
	return fd, nil
}

// Read waits for one IPv4 packet and copies it, without its Ethernet
// header, into buf. n is its full length, which is more than len(buf)
// when it did not fit (the excess is discarded); a frame too short for
// an Ethernet header reads as an empty packet.
func (c *packetConn) Read(buf []byte) (n int, from net.HardwareAddr, err error) {
	frame := c.rbuf[:min(len(c.rbuf), ethHeaderLen+len(buf))]
	var rerr error
	err = c.rc.Read(func(fd uintptr) bool {
		var sa unix.RawSockaddrLinklayer
		salen := uint32(unsafe.Sizeof(sa))
		n, rerr = recvfrom(int(fd), frame, unix.MSG_TRUNC, &sa, &salen)
		if rerr == unix.EAGAIN {
			return false
		}
		if rerr == nil && sa.Halen <= 8 {
			from = net.HardwareAddr(append([]byte(nil), sa.Addr[:sa.Halen]...))
		}
		return true
	})
	if err == nil {
		err = rerr
	}
	if err != nil {
		return 0, from, err
	}
	if n < ethHeaderLen {
		return 0, from, nil
	}
	copy(buf, frame[ethHeaderLen:min(n, len(frame))])
	return n - ethHeaderLen, from, nil
}

// recvfrom is recvfrom(2) into a link-layer address, without the
// allocations of unix.Recvfrom.
func recvfrom(fd int, p []byte, flags int, from *unix.RawSockaddrLinklayer, fromlen *uint32) (int, error) {
	r, _, e := unix.Syscall6(unix.SYS_RECVFROM, uintptr(fd), uintptr(unsafe.Pointer(&p[0])), uintptr(len(p)),
		uintptr(flags), uintptr(unsafe.Pointer(from)), uintptr(unsafe.Pointer(fromlen)))
	if e != 0 {
		return int(r), e
	}
	return int(r), nil
}

// Write sends one IPv4 packet to the link-layer address to, on the
// socket's own interface: it sends a whole frame with no address.
func (c *packetConn) Write(pkt []byte, to net.HardwareAddr) error {
	if len(to) != 6 {
		return fmt.Errorf("link-layer destination %q is not an Ethernet address", to)
	}
	frame := append(append(append(c.wbuf[:0], to...), c.mac...), byte(unix.ETH_P_IP>>8), byte(unix.ETH_P_IP&0xff))
	frame = append(frame, pkt...)
	c.wbuf = frame[:0]
	var werr error
	err := c.rc.Write(func(fd uintptr) bool {
		werr = unix.Sendto(int(fd), frame, 0, nil)
		return werr != unix.EAGAIN
	})
	if err != nil {
		return err
	}
	return werr
}

// Close closes both sockets; it is safe to call more than once and from
// another goroutine, which makes a pending Read return.
func (c *packetConn) Close() error {
	var err error
	c.once.Do(func() {
		err = c.f.Close()
		if c.guard >= 0 {
			unix.Close(c.guard)
		}
	})
	return err
}
