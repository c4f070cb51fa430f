package dhcpd

import (
	"fmt"
	"net"
	"strings"
	"time"

	"github.com/spf13/pflag"
)

// Config is what one responder process serves: one lease on one interface.
// It travels between processes as command-line arguments (Args and
// FlagSet): qvm's monitor starts `qvm dhcpd` with them, and the HVM
// stubdomain's init starts its own responder the same way.
type Config struct {
	// Interface is the interface to serve on.
	Interface string
	// Lease is the one client's lease.
	Lease Lease
	// ServerIP is the server identifier and the replies' source address;
	// nil means the lease's gateway.
	ServerIP net.IP
	// DieWithParent makes the responder die (SIGKILL) when the process
	// that started it does, as a VM's monitor asks: a killed monitor
	// leaves no responder behind (see Server.ParentDeathSignal).
	DieWithParent bool
}

// Server is the server identifier Config asks for.
func (c Config) Server() net.IP {
	if c.ServerIP != nil {
		return c.ServerIP
	}
	return c.Lease.Gateway
}

// Defaults of the options that Args leaves out when they hold.
const (
	defaultNetmask = "255.255.255.255"
	defaultDNS     = "10.139.1.1,10.139.1.2"
)

// Args encodes c as the options FlagSet parses back.
func (c Config) Args() []string {
	l := c.Lease
	dns := make([]string, len(l.DNS))
	for i, d := range l.DNS {
		dns[i] = d.String()
	}
	args := []string{"--interface", c.Interface, "--mac", l.MAC.String(), "--ip", l.IP.String(),
		"--gateway", l.Gateway.String()}
	if l.Netmask != nil {
		args = append(args, "--netmask", net.IP(l.Netmask).String())
	}
	args = append(args, "--dns", strings.Join(dns, ","))
	if c.ServerIP != nil {
		args = append(args, "--server-ip", c.ServerIP.String())
	}
	if l.Hostname != "" {
		args = append(args, "--hostname", l.Hostname)
	}
	if l.Duration != 0 {
		args = append(args, "--lease-time", l.Duration.String())
	}
	if c.DieWithParent {
		args = append(args, "--die-with-parent")
	}
	return args
}

// FlagSet parses a responder's options (see Config.Args).
type FlagSet struct {
	*pflag.FlagSet
	ifname, mac, ip, gateway, netmask, dns, serverIP, hostname string
	leaseTime                                                  time.Duration
	dieWithParent                                              bool
}

// NewFlagSet returns the responder's options on a flag set named name
// that returns its errors (pflag.ContinueOnError).
func NewFlagSet(name string) *FlagSet {
	f := &FlagSet{FlagSet: pflag.NewFlagSet(name, pflag.ContinueOnError)}
	f.StringVar(&f.ifname, "interface", "", "interface to serve on (the VM's backend interface or the stubdomain's bridge)")
	f.StringVar(&f.mac, "mac", "", "the VM's MAC address; other clients get no answer")
	f.StringVar(&f.ip, "ip", "", "the VM's IPv4 address")
	f.StringVar(&f.gateway, "gateway", "", "the VM's gateway (router)")
	f.StringVar(&f.netmask, "netmask", defaultNetmask, "the VM's netmask (dotted or /prefix)")
	f.StringVar(&f.dns, "dns", defaultDNS, "DNS servers, comma-separated (empty: none)")
	f.StringVar(&f.serverIP, "server-ip", "", "server identifier and source address of replies (default: the gateway)")
	f.StringVar(&f.hostname, "hostname", "", "host name to give the VM (option 12; default: none)")
	f.DurationVar(&f.leaseTime, "lease-time", DefaultLeaseDuration, "lease time")
	f.BoolVar(&f.dieWithParent, "die-with-parent", false, "die (SIGKILL) when the process that started this one does")
	return f
}

// Config checks the parsed options and returns what they ask for. Errors
// name the option at fault.
func (f *FlagSet) Config() (Config, error) {
	var c Config
	if f.NArg() > 0 {
		return c, fmt.Errorf("unexpected argument %q: the responder takes only options", f.Arg(0))
	}
	for _, req := range []struct{ name, val string }{{"interface", f.ifname}, {"mac", f.mac}, {"ip", f.ip}, {"gateway", f.gateway}} {
		if req.val == "" {
			return c, fmt.Errorf("--%s is required (see --help)", req.name)
		}
	}
	c.Interface = f.ifname
	c.DieWithParent = f.dieWithParent
	l := &c.Lease
	var err error
	if l.MAC, err = ParseMAC(f.mac); err != nil {
		return c, fmt.Errorf("--mac: %w", err)
	}
	if l.IP, err = ParseIPv4("--ip", f.ip); err != nil {
		return c, err
	}
	if l.Gateway, err = ParseIPv4("--gateway", f.gateway); err != nil {
		return c, err
	}
	if l.Netmask, err = ParseNetmask(f.netmask); err != nil {
		return c, fmt.Errorf("--netmask: %w", err)
	}
	if l.DNS, err = ParseIPv4List("--dns", f.dns); err != nil {
		return c, err
	}
	if f.serverIP != "" {
		if c.ServerIP, err = ParseIPv4("--server-ip", f.serverIP); err != nil {
			return c, err
		}
	}
	if err := checkHostname(f.hostname); err != nil {
		return c, fmt.Errorf("--hostname: %w", err)
	}
	l.Hostname = f.hostname
	l.Duration = f.leaseTime
	return c, nil
}
