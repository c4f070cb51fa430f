package vmfirewall_test

import (
	"bufio"
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"runtime"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/google/nftables"
	"github.com/google/nftables/expr"
	"github.com/vishvananda/netns"
	"golang.org/x/sys/unix"

	"github.com/qvm-project/qvm/dhcpd"
	"github.com/qvm-project/qvm/internal/testenv"
	"github.com/qvm-project/qvm/internal/testio"
	"github.com/qvm-project/qvm/vifroute"
	"github.com/qvm-project/qvm/vmfirewall"
)

// The responder of TestDHCPThroughFilter runs in a child process (this
// test binary re-executed in dom0's namespace): its sandbox is for the
// whole process.
const (
	responderEnv   = "QVM_VMFIREWALL_TEST_DHCPD" // JSON: the `qvm dhcpd` arguments
	responderReady = "DHCPD-READY"
	responderStats = "DHCPD-STATS "
)

func TestMain(m *testing.M) {
	if args := os.Getenv(responderEnv); args != "" {
		os.Exit(runResponder(args))
	}
	os.Exit(m.Run())
}

// runResponder is `qvm dhcpd ARGS` in-process: serve until SIGTERM, then
// print the stats.
func runResponder(argsJSON string) int {
	var args []string
	if err := json.Unmarshal([]byte(argsJSON), &args); err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 2
	}
	fs := dhcpd.NewFlagSet("dhcpd")
	if err := fs.Parse(args); err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 2
	}
	cfg, err := fs.Config()
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 2
	}
	log := slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelDebug}))
	s, err := dhcpd.New(cfg.Interface, cfg.Server(), []dhcpd.Lease{cfg.Lease}, log)
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM)
	defer stop()
	go func() {
		<-s.Ready()
		fmt.Println(responderReady)
	}()
	if err := s.Serve(ctx); err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	b, _ := json.Marshal(s.Stats())
	fmt.Printf("%s%s\n", responderStats, b)
	return 0
}

// Addresses of the bed: two VMs behind dom0 (routed /32s, as Qubes does
// it) and a host outside, on dom0's uplink.
var (
	gw4, gw6   = netip.MustParseAddr("10.137.255.254"), netip.MustParseAddr("fd09:24ef:4179::a89:fffe")
	vm1v4      = netip.MustParseAddr("10.137.0.11")
	vm1v6      = netip.MustParseAddr("fd09:24ef:4179::a89:b")
	vm2v4      = netip.MustParseAddr("10.137.0.12")
	vm2v6      = netip.MustParseAddr("fd09:24ef:4179::a89:c")
	uplink4    = netip.MustParseAddr("10.200.0.1")
	outside4   = netip.MustParseAddr("10.200.0.2")
	outside6   = netip.MustParseAddr("fd00:200::2")
	vm1MAC     = "00:16:3e:5e:6c:0b"
	vm1Vif     = "vif1.0"
	vm2Vif     = "vif2.0"
	probePort  = 7777
	probeWait  = 2 * time.Second
	dropsLimit = 20 * time.Second
)

// bed is dom0, two VMs and an outside host, each a network namespace:
// dom0's vif1.0 and vif2.0 are veth peers of the VMs' eth0, routed by
// package vifroute; dom0's up0 is the peer of the outside host's eth0.
type bed struct {
	dom0, vm1, vm2, outside string
	lock                    string
}

func sh(t *testing.T, args ...string) string {
	t.Helper()
	out, err := exec.Command(args[0], args[1:]...).CombinedOutput()
	if err != nil {
		t.Fatalf("%s: %v\n%s", strings.Join(args, " "), err, out)
	}
	return string(out)
}

func newBed(t *testing.T) *bed {
	t.Helper()
	testenv.RequireRoot(t)
	testenv.LookPath(t, "ip")
	id := make([]byte, 3)
	rand.Read(id)
	x := hex.EncodeToString(id)
	b := &bed{dom0: "qvmfw-" + x + "-d0", vm1: "qvmfw-" + x + "-v1", vm2: "qvmfw-" + x + "-v2", outside: "qvmfw-" + x + "-out",
		lock: filepath.Join(t.TempDir(), "fw.lock")}
	for _, ns := range []string{b.dom0, b.vm1, b.vm2, b.outside} {
		sh(t, "ip", "netns", "add", ns)
		t.Cleanup(func() { exec.Command("ip", "netns", "del", ns).Run() })
		sh(t, "ip", "-n", ns, "link", "set", "lo", "up")
		// No duplicate address detection: addresses are usable at once.
		inNetns(t, ns, func() error { return writeSysctl("net/ipv6/conf/default/accept_dad", "0") })
	}
	for _, vm := range []struct {
		ns, vif string
		v4, v6  netip.Addr
		mac     string
	}{{b.vm1, vm1Vif, vm1v4, vm1v6, vm1MAC}, {b.vm2, vm2Vif, vm2v4, vm2v6, "00:16:3e:5e:6c:0c"}} {
		sh(t, "ip", "-n", b.dom0, "link", "add", vm.vif, "type", "veth", "peer", "name", "eth0", "netns", vm.ns)
		// The VM side, as qubes-network-setup does it from its keys.
		sh(t, "ip", "-n", vm.ns, "link", "set", "eth0", "address", vm.mac, "up")
		sh(t, "ip", "-n", vm.ns, "addr", "add", vm.v4.String()+"/32", "dev", "eth0")
		sh(t, "ip", "-n", vm.ns, "addr", "add", vm.v6.String()+"/128", "dev", "eth0", "nodad")
		sh(t, "ip", "-n", vm.ns, "route", "add", gw4.String(), "dev", "eth0", "scope", "link")
		sh(t, "ip", "-n", vm.ns, "route", "add", "default", "via", gw4.String(), "dev", "eth0")
		sh(t, "ip", "-n", vm.ns, "-6", "route", "add", gw6.String(), "dev", "eth0")
		sh(t, "ip", "-n", vm.ns, "-6", "route", "add", "default", "via", gw6.String(), "dev", "eth0")
		inNetns(t, b.dom0, func() error {
			return vifroute.Up(vifroute.Config{Interface: vm.vif, VMAddrs: []netip.Addr{vm.v4, vm.v6}, Gateways: []netip.Addr{gw4, gw6}})
		})
	}
	sh(t, "ip", "-n", b.dom0, "link", "add", "up0", "type", "veth", "peer", "name", "eth0", "netns", b.outside)
	sh(t, "ip", "-n", b.dom0, "addr", "add", uplink4.String()+"/24", "dev", "up0")
	sh(t, "ip", "-n", b.dom0, "addr", "add", "fd00:200::1/64", "dev", "up0", "nodad")
	sh(t, "ip", "-n", b.dom0, "link", "set", "up0", "up")
	sh(t, "ip", "-n", b.outside, "addr", "add", outside4.String()+"/24", "dev", "eth0")
	sh(t, "ip", "-n", b.outside, "addr", "add", outside6.String()+"/64", "dev", "eth0", "nodad")
	sh(t, "ip", "-n", b.outside, "link", "set", "eth0", "up")
	sh(t, "ip", "-n", b.outside, "route", "add", "10.137.0.0/16", "via", uplink4.String())
	sh(t, "ip", "-n", b.outside, "-6", "route", "add", "fd09:24ef:4179::/48", "via", "fd00:200::1")
	inNetns(t, b.dom0, func() error {
		return errors.Join(writeSysctl("net/ipv4/conf/up0/forwarding", "1"), writeSysctl("net/ipv6/conf/all/forwarding", "1"))
	})
	return b
}

func writeSysctl(key, val string) error {
	return os.WriteFile(filepath.Join("/proc/sys", key), []byte(val), 0o644)
}

func readSysctl(key string) (string, error) {
	b, err := os.ReadFile(filepath.Join("/proc/sys", key))
	return strings.TrimSpace(string(b)), err
}

func (b *bed) filter() vmfirewall.Filter { return vmfirewall.Filter{LockPath: b.lock} }

func (b *bed) add(t *testing.T, vif string, addrs ...netip.Addr) {
	t.Helper()
	inNetns(t, b.dom0, func() error {
		return b.filter().Add(context.Background(), vmfirewall.Vif{Interface: vif, Addrs: addrs})
	})
}

func (b *bed) remove(t *testing.T, vif string) {
	t.Helper()
	inNetns(t, b.dom0, func() error { return b.filter().Remove(context.Background(), vif) })
}

// inNetns runs f on a thread moved into the named namespace; the thread
// is dropped afterwards, not reused.
func inNetns(t testing.TB, name string, f func() error) {
	t.Helper()
	if err := inNetnsErr(name, f); err != nil {
		t.Fatalf("in %s: %v", name, err)
	}
}

func inNetnsErr(name string, f func() error) error {
	done := make(chan error)
	go func() {
		runtime.LockOSThread()
		ns, err := netns.GetFromName(name)
		if err != nil {
			done <- err
			return
		}
		defer ns.Close()
		if err := netns.Set(ns); err != nil {
			done <- err
			return
		}
		done <- f()
	}()
	return <-done
}

// listener counts what reaches a TCP and a UDP socket on probePort of
// every address of a namespace (IPv4 and IPv6).
type listener struct {
	mu       sync.Mutex
	accepted map[string]int // by the connection's source address
	received map[string]int
}

func listen(t *testing.T, ns string) *listener {
	t.Helper()
	l := &listener{accepted: map[string]int{}, received: map[string]int{}}
	inNetns(t, ns, func() error {
		tl, err := net.Listen("tcp", fmt.Sprintf(":%d", probePort))
		if err != nil {
			return err
		}
		ul, err := net.ListenPacket("udp", fmt.Sprintf(":%d", probePort))
		if err != nil {
			tl.Close()
			return err
		}
		t.Cleanup(func() { tl.Close(); ul.Close() })
		go func() {
			for {
				c, err := tl.Accept()
				if err != nil {
					return
				}
				l.mu.Lock()
				l.accepted[srcOf(c.RemoteAddr())]++
				l.mu.Unlock()
				c.Write([]byte("hello\n"))
				c.Close()
			}
		}()
		go func() {
			buf := make([]byte, 1500)
			for {
				_, from, err := ul.ReadFrom(buf)
				if err != nil {
					return
				}
				l.mu.Lock()
				l.received[srcOf(from)]++
				l.mu.Unlock()
			}
		}()
		return nil
	})
	return l
}

func srcOf(a net.Addr) string {
	ap, err := netip.ParseAddrPort(a.String())
	if err != nil {
		return a.String()
	}
	return ap.Addr().Unmap().String()
}

func (l *listener) got(src netip.Addr) (tcp, udp int) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.accepted[src.String()], l.received[src.String()]
}

// dialTCP connects from namespace ns to dst:probePort and reads the
// listener's greeting.
func dialTCP(ns string, dst netip.Addr) error {
	return inNetnsErr(ns, func() error {
		c, err := net.DialTimeout("tcp", netip.AddrPortFrom(dst, uint16(probePort)).String(), probeWait)
		if err != nil {
			return err
		}
		defer c.Close()
		c.SetDeadline(time.Now().Add(probeWait))
		_, err = bufio.NewReader(c).ReadString('\n')
		return err
	})
}

// reach retries f until it succeeds: the positive checks, where a first
// packet may go while a link or its addresses are still coming up (IPv6
// neighbour discovery retries only after a second).
func reach(t *testing.T, what string, f func() error) {
	t.Helper()
	deadline := time.Now().Add(dropsLimit)
	for {
		err := f()
		if err == nil {
			return
		}
		if time.Now().After(deadline) {
			t.Errorf("%s: %v", what, err)
			return
		}
	}
}

// sendUDP sends one datagram from src to dst:probePort out of namespace
// ns. src need not be an address of ns: the socket is transparent
// (IP_TRANSPARENT), so a VM can forge any source, as a hostile guest would.
func sendUDP(ns string, src, dst netip.Addr) error {
	return inNetnsErr(ns, func() error {
		d := net.Dialer{LocalAddr: net.UDPAddrFromAddrPort(netip.AddrPortFrom(src, 0)),
			Control: func(network, address string, c syscall.RawConn) error {
				var serr error
				err := c.Control(func(fd uintptr) {
					if src.Is4() {
						serr = unix.SetsockoptInt(int(fd), unix.SOL_IP, unix.IP_TRANSPARENT, 1)
					} else {
						serr = unix.SetsockoptInt(int(fd), unix.SOL_IPV6, unix.IPV6_TRANSPARENT, 1)
					}
				})
				return errors.Join(err, serr)
			}}
		c, err := d.Dial("udp", netip.AddrPortFrom(dst, uint16(probePort)).String())
		if err != nil {
			return err
		}
		defer c.Close()
		_, err = c.Write([]byte("probe"))
		return err
	})
}

// waitUDP waits until the listener has a datagram from src.
func waitUDP(t *testing.T, l *listener, src netip.Addr) {
	t.Helper()
	deadline := time.Now().Add(dropsLimit)
	for {
		if _, n := l.got(src); n > 0 {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("no datagram from %s after %s", src, dropsLimit)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// counters reads the packet counts of a chain's counters, in rule order.
func (b *bed) counters(t *testing.T, chain string) []uint64 {
	t.Helper()
	var out []uint64
	inNetns(t, b.dom0, func() error {
		c, err := nftables.New()
		if err != nil {
			return err
		}
		tab := &nftables.Table{Family: nftables.TableFamilyINet, Name: vmfirewall.TableName}
		rules, err := c.GetRules(tab, &nftables.Chain{Table: tab, Name: chain})
		if err != nil {
			return fmt.Errorf("rules of %s: %w", chain, err)
		}
		for _, r := range rules {
			for _, e := range r.Exprs {
				if ctr, ok := e.(*expr.Counter); ok {
					out = append(out, ctr.Packets)
				}
			}
		}
		return nil
	})
	return out
}

// waitDrop sends probes with send until counter i of chain has grown
// past what it was: the filter dropped one (a packet the filter drops
// never reaches its destination, so the listener check after this is
// exact).
func (b *bed) waitDrop(t *testing.T, chain string, i int, what string, send func() error) {
	t.Helper()
	before := b.counters(t, chain)
	if len(before) <= i {
		t.Fatalf("chain %s has %d counters, want counter %d", chain, len(before), i)
	}
	deadline := time.Now().Add(dropsLimit)
	for {
		if err := send(); err != nil {
			t.Logf("%s: %v", what, err)
		}
		if now := b.counters(t, chain); now[i] > before[i] {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s: the drop counter %d of chain %s stayed at %d", what, i, chain, before[i])
		}
	}
}

func (b *bed) ruleset(t *testing.T) string {
	t.Helper()
	var sb strings.Builder
	inNetns(t, b.dom0, func() error {
		c, err := nftables.New()
		if err != nil {
			return err
		}
		tables, err := c.ListTables()
		if err != nil {
			return err
		}
		for _, tab := range tables {
			fmt.Fprintf(&sb, "table %d %s\n", tab.Family, tab.Name)
		}
		chains, err := c.ListChains()
		if err != nil {
			return err
		}
		for _, ch := range chains {
			rules, _ := c.GetRules(ch.Table, ch)
			fmt.Fprintf(&sb, "chain %s %s: %d rules\n", ch.Table.Name, ch.Name, len(rules))
		}
		return nil
	})
	return sb.String()
}

// TestFilterWithRealPackets plays dom0, two VMs and an outside host in
// network namespaces and sends real packets, first without the filter
// (each path works, so each later failure is the filter's doing), then
// with it: the VMs cannot reach dom0's listeners or each other, cannot
// use another source address, can reach the outside and get its answers;
// the outside cannot open connections to them. Then the table goes away
// with the last interface.
func TestFilterWithRealPackets(t *testing.T) {
	b := newBed(t)
	dom0 := listen(t, b.dom0)
	vm2 := listen(t, b.vm2)
	vm1 := listen(t, b.vm1)
	outside := listen(t, b.outside)
	// Source addresses VM 1 has no right to: VM 2's, dom0's, others
	// on the outside network. (dom0's IPv4 gateway is not among them: dom0's
	// kernel drops forwarded packets claiming a local IPv4 source
	// anyway, so that path cannot be shown to work unfiltered.)
	spoofed := []netip.Addr{vm2v4, vm2v6, gw6, netip.MustParseAddr("10.200.0.3"), netip.MustParseAddr("fd00:200::3")}
	outsideOf := func(a netip.Addr) netip.Addr {
		if a.Is4() {
			return outside4
		}
		return outside6
	}

	t.Run("unfiltered", func(t *testing.T) {
		for _, dst := range []netip.Addr{gw4, gw6, uplink4} {
			reach(t, "VM to dom0 "+dst.String(), func() error { return dialTCP(b.vm1, dst) })
		}
		for _, dst := range []netip.Addr{vm2v4, vm2v6} {
			reach(t, "VM to VM "+dst.String(), func() error { return dialTCP(b.vm1, dst) })
		}
		reach(t, "outside to VM", func() error { return dialTCP(b.outside, vm1v4) })
		for _, src := range spoofed {
			if err := sendUDP(b.vm1, src, outsideOf(src)); err != nil {
				t.Fatal(err)
			}
			waitUDP(t, outside, src)
		}
	})
	if t.Failed() {
		t.Fatalf("the bed does not route without the filter:\n%s", b.ruleset(t))
	}
	dom0TCP, dom0UDP := dom0.got(vm1v4)
	dom0TCP6, dom0UDP6 := dom0.got(vm1v6)

	b.add(t, vm1Vif, vm1v4, vm1v6)
	b.add(t, vm2Vif, vm2v4, vm2v6)
	// Running online again replaces the rules: same table, nothing twice.
	before := b.ruleset(t)
	b.add(t, vm1Vif, vm1v4, vm1v6)
	if after := b.ruleset(t); after != before {
		t.Errorf("Add again changed the ruleset:\n%s\nwas:\n%s", after, before)
	}
	inNetns(t, b.dom0, func() error {
		for _, vif := range []string{vm1Vif, vm2Vif} {
			if v, err := readSysctl("net/ipv4/conf/" + vif + "/rp_filter"); err != nil || v != "1" {
				t.Errorf("%s rp_filter = %q, %v; want 1 (strict)", vif, v, err)
			}
		}
		return nil
	})

	t.Run("dom0", func(t *testing.T) {
		for _, dst := range []netip.Addr{gw4, gw6, uplink4} {
			b.waitDrop(t, "vm-input", 0, "TCP from the VM to dom0 "+dst.String(), func() error {
				if err := dialTCP(b.vm1, dst); err == nil {
					t.Fatalf("the VM connected to dom0's listener on %s", dst)
				}
				return nil
			})
			src := vm1v4
			if dst.Is6() {
				src = vm1v6
			}
			b.waitDrop(t, "vm-input", 0, "UDP from the VM to dom0 "+dst.String(), func() error { return sendUDP(b.vm1, src, dst) })
		}
		if tcp, udp := dom0.got(vm1v4); tcp != dom0TCP || udp != dom0UDP {
			t.Errorf("dom0's listener got %d connections and %d datagrams from the VM through the filter", tcp-dom0TCP, udp-dom0UDP)
		}
		if tcp, udp := dom0.got(vm1v6); tcp != dom0TCP6 || udp != dom0UDP6 {
			t.Errorf("dom0's listener got %d connections and %d datagrams from the VM's IPv6 address through the filter", tcp-dom0TCP6, udp-dom0UDP6)
		}
	})

	t.Run("spoofing", func(t *testing.T) {
		for _, src := range spoofed {
			b.waitDrop(t, vm1Vif, 0, "from "+src.String(), func() error { return sendUDP(b.vm1, src, outsideOf(src)) })
		}
		// The datagrams of the unfiltered run arrived; none since.
		for _, src := range spoofed {
			if _, n := outside.got(src); n != 1 {
				t.Errorf("outside got %d datagrams from %s, want only the unfiltered one", n, src)
			}
		}
	})

	t.Run("vm-to-vm", func(t *testing.T) {
		vm2TCP, _ := vm2.got(vm1v4)
		for _, dst := range []netip.Addr{vm2v4, vm2v6} {
			b.waitDrop(t, "forward", 0, "TCP from VM 1 to VM 2 "+dst.String(), func() error {
				if err := dialTCP(b.vm1, dst); err == nil {
					t.Fatalf("VM 1 connected to VM 2 at %s", dst)
				}
				return nil
			})
		}
		if tcp, _ := vm2.got(vm1v4); tcp != vm2TCP {
			t.Errorf("VM 2 accepted %d connections from VM 1", tcp-vm2TCP)
		}
	})

	t.Run("outside", func(t *testing.T) {
		// Out and the answers back: forwarded.
		for _, dst := range []netip.Addr{outside4, outside6} {
			reach(t, "VM to the outside "+dst.String(), func() error { return dialTCP(b.vm1, dst) })
		}
		// In, new: dropped.
		vm1TCP, _ := vm1.got(outside4)
		b.waitDrop(t, "forward", 1, "TCP from the outside to the VM", func() error {
			if err := dialTCP(b.outside, vm1v4); err == nil {
				t.Fatalf("the outside host connected to the VM")
			}
			return nil
		})
		if tcp, _ := vm1.got(outside4); tcp != vm1TCP {
			t.Errorf("the VM accepted %d connections from the outside", tcp-vm1TCP)
		}
	})

	t.Run("offline", func(t *testing.T) {
		b.remove(t, vm1Vif)
		b.remove(t, vm1Vif) // a second offline is fine
		var vifs []string
		inNetns(t, b.dom0, func() error {
			var err error
			vifs, err = b.filter().Interfaces()
			return err
		})
		if strings.Join(vifs, " ") != vm2Vif {
			t.Errorf("filtered after removing %s: %q, want %s", vm1Vif, vifs, vm2Vif)
		}
		// VM 2 is still filtered.
		b.waitDrop(t, "vm-input", 0, "TCP from VM 2 to dom0", func() error {
			if err := dialTCP(b.vm2, gw4); err == nil {
				t.Fatalf("VM 2 connected to dom0 after VM 1's interface went offline")
			}
			return nil
		})
		b.remove(t, vm2Vif)
		if rs := b.ruleset(t); rs != "" {
			t.Errorf("after the last interface went offline:\n%s", rs)
		}
		b.remove(t, "vif9.0") // no table: fine
		reach(t, "VM to dom0 with no filter left", func() error { return dialTCP(b.vm1, gw4) })
	})
}

// TestDHCPThroughFilter runs the real responder on a filtered interface
// and a real client (udhcpc) in the VM: it gets its lease by broadcast
// and renews it by unicast to the gateway, although the filter drops both
// in netfilter (the DISCOVER's source 0.0.0.0 is not the VM's, and the
// renewal is input to dom0): the responder reads them from its packet
// socket before netfilter and sends its answers past it.
func TestDHCPThroughFilter(t *testing.T) {
	udhcpc := testenv.LookPath(t, "udhcpc")
	b := newBed(t)
	b.add(t, vm1Vif, vm1v4, vm1v6)
	lease := dhcpd.Config{Interface: vm1Vif, Lease: dhcpd.Lease{MAC: mustMAC(vm1MAC), IP: vm1v4.AsSlice(), Gateway: gw4.AsSlice(),
		Netmask: net.CIDRMask(32, 32), DNS: []net.IP{net.ParseIP("10.139.1.1").To4()}, Duration: time.Hour}}
	stats := startResponder(t, b.dom0, lease.Args())
	antispoof, input := b.counters(t, vm1Vif)[0], b.counters(t, "vm-input")[0]

	dir := t.TempDir()
	hook := filepath.Join(dir, "hook.sh")
	if err := os.WriteFile(hook, []byte("#!/bin/sh\nenv > \""+dir+"/env.$1.tmp\" && mv \""+dir+"/env.$1.tmp\" \""+dir+"/env.$1\"\n"), 0o755); err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command("ip", "netns", "exec", b.vm1, udhcpc, "-i", "eth0", "-f", "-t", "10", "-T", "1", "-s", hook)
	var out testio.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cmd.Process.Kill(); cmd.Wait() })
	env := hookEnv(t, dir, "bound", &out)
	if env["ip"] != vm1v4.String() || env["router"] != gw4.String() || env["serverid"] != gw4.String() {
		t.Errorf("bound: ip=%s router=%s serverid=%s, want %s via %s", env["ip"], env["router"], env["serverid"], vm1v4, gw4)
	}
	cmd.Process.Signal(syscall.SIGUSR1)
	env = hookEnv(t, dir, "renew", &out)
	if env["ip"] != vm1v4.String() {
		t.Errorf("renew: ip=%s", env["ip"])
	}
	cmd.Process.Kill()
	cmd.Wait()
	st := stats()
	if st.Acks < 1 || st.Renewals < 1 {
		t.Errorf("responder stats %+v: want an ack and a renewal", st)
	}
	// Netfilter did drop the requests: the broadcast ones from 0.0.0.0
	// as spoofed, the unicast renewal as input to dom0.
	if now := b.counters(t, vm1Vif)[0]; now <= antispoof {
		t.Errorf("the VM chain's drop counter stayed at %d: the DISCOVER was not dropped by netfilter", now)
	}
	if now := b.counters(t, "vm-input")[0]; now <= input {
		t.Errorf("vm-input's drop counter stayed at %d: the unicast renewal was not dropped by netfilter", now)
	}
}

func mustMAC(s string) net.HardwareAddr {
	m, err := net.ParseMAC(s)
	if err != nil {
		panic(err)
	}
	return m
}

// hookEnv waits for udhcpc's hook to have run for event and returns the
// environment it saw.
func hookEnv(t *testing.T, dir, event string, out *testio.Buffer) map[string]string {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for {
		if b, err := os.ReadFile(filepath.Join(dir, "env."+event)); err == nil {
			env := map[string]string{}
			for _, line := range strings.Split(string(b), "\n") {
				if k, v, ok := strings.Cut(line, "="); ok {
					env[k] = strings.TrimSpace(v)
				}
			}
			return env
		}
		if time.Now().After(deadline) {
			t.Fatalf("udhcpc did not run its hook for %s:\n%s", event, out.String())
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// startResponder runs `qvm dhcpd ARGS` (this binary as the responder) in
// namespace ns until stop is called, which returns its stats.
func startResponder(t *testing.T, ns string, args []string) (stop func() dhcpd.Stats) {
	t.Helper()
	exe, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	a, _ := json.Marshal(args)
	cmd := exec.Command("ip", "netns", "exec", ns, exe, "-test.run=^$")
	cmd.Env = append(os.Environ(), responderEnv+"="+string(a))
	var stderr testio.Buffer
	cmd.Stderr = &stderr
	pipe, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	lines := make(chan string, 4)
	go func() {
		sc := bufio.NewScanner(pipe)
		for sc.Scan() {
			lines <- sc.Text()
		}
		close(lines)
	}()
	killed := false
	t.Cleanup(func() {
		if !killed {
			cmd.Process.Kill()
			cmd.Wait()
		}
	})
	select {
	case l := <-lines:
		if l != responderReady {
			t.Fatalf("responder: %q\n%s", l, stderr.String())
		}
	case <-time.After(30 * time.Second):
		t.Fatalf("responder not ready:\n%s", stderr.String())
	}
	return func() dhcpd.Stats {
		killed = true
		cmd.Process.Signal(syscall.SIGTERM)
		var st dhcpd.Stats
		for l := range lines {
			if s, ok := strings.CutPrefix(l, responderStats); ok {
				json.Unmarshal([]byte(s), &st)
			}
		}
		cmd.Wait()
		t.Logf("responder log:\n%s", stderr.String())
		return st
	}
}

// TestConcurrentHotplug adds and removes interfaces from many goroutines
// at once, as libxl runs the hotplug scripts of VMs starting and stopping
// together: after each has added its interface last, all are filtered (no
// Remove deleted the table under another's Add); after all remove theirs
// at once, nothing is left (no two Removes each left the table to the
// other).
func TestConcurrentHotplug(t *testing.T) {
	testenv.RequireRoot(t)
	testenv.LookPath(t, "ip")
	b := &bed{dom0: "qvmfw-conc-" + fmt.Sprint(os.Getpid()), lock: filepath.Join(t.TempDir(), "fw.lock")}
	sh(t, "ip", "netns", "add", b.dom0)
	t.Cleanup(func() { exec.Command("ip", "netns", "del", b.dom0).Run() })
	const n, rounds = 6, 10
	var all []string
	for i := range n {
		vif := fmt.Sprintf("vif%d.0", i+1)
		sh(t, "ip", "-n", b.dom0, "link", "add", vif, "type", "veth", "peer", "name", fmt.Sprintf("peer%d", i+1))
		all = append(all, vif)
	}
	// each runs f(vif, its address) in n goroutines at once.
	each := func(f func(ctx context.Context, v vmfirewall.Vif) error) {
		t.Helper()
		var wg sync.WaitGroup
		errs := make(chan error, n)
		for i, vif := range all {
			wg.Add(1)
			go func() {
				defer wg.Done()
				v := vmfirewall.Vif{Interface: vif, Addrs: []netip.Addr{netip.AddrFrom4([4]byte{10, 137, 0, byte(i + 1)})}}
				errs <- inNetnsErr(b.dom0, func() error { return f(context.Background(), v) })
			}()
		}
		wg.Wait()
		close(errs)
		for err := range errs {
			if err != nil {
				t.Fatal(err)
			}
		}
	}
	for round := range rounds {
		each(func(ctx context.Context, v vmfirewall.Vif) error {
			for range 3 {
				if err := b.filter().Add(ctx, v); err != nil {
					return err
				}
				if err := b.filter().Remove(ctx, v.Interface); err != nil {
					return err
				}
			}
			return b.filter().Add(ctx, v)
		})
		var got []string
		inNetns(t, b.dom0, func() error {
			var err error
			got, err = b.filter().Interfaces()
			return err
		})
		if strings.Join(got, " ") != strings.Join(all, " ") {
			t.Fatalf("round %d: filtered after all added: %q, want %q\n%s", round, got, all, b.ruleset(t))
		}
		each(func(ctx context.Context, v vmfirewall.Vif) error { return b.filter().Remove(ctx, v.Interface) })
		if rs := b.ruleset(t); rs != "" {
			t.Fatalf("round %d: after all removed:\n%s", round, rs)
		}
	}
}
