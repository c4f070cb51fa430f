package main

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"time"

	"github.com/spf13/pflag"

	"github.com/qvm-project/qvm/dhcpd"
)

// dhcpdOptions are the command-line options of `qvm dhcpd`.
type dhcpdOptions struct {
	ifname    string
	mac       string
	ip        string
	gateway   string
	netmask   string
	dns       string
	serverIP  string
	hostname  string
	leaseTime time.Duration
}

// parseDHCPDFlags reads the options; help is true when --help was asked.
func parseDHCPDFlags(a *app, args []string) (o dhcpdOptions, help bool, err error) {
	fs := pflag.NewFlagSet(a.prog, pflag.ContinueOnError)
	fs.SetOutput(a.stderr)
	fs.Usage = func() {
		fmt.Fprintf(a.stderr, "usage: %s --interface IF --mac MAC --ip IP --gateway GW [options]\n\n", a.prog)
		fmt.Fprintf(a.stderr, "Serve one VM its address by DHCP on one interface until stopped (SIGTERM).\n"+
			"The process drops its privileges and confines itself with seccomp once bound.\n\n")
		fs.PrintDefaults()
	}
	fs.StringVar(&o.ifname, "interface", "", "interface to serve on (the VM's backend interface or the stubdomain's bridge)")
	fs.StringVar(&o.mac, "mac", "", "the VM's MAC address; other clients get no answer")
	fs.StringVar(&o.ip, "ip", "", "the VM's IPv4 address")
	fs.StringVar(&o.gateway, "gateway", "", "the VM's gateway (router)")
	fs.StringVar(&o.netmask, "netmask", "255.255.255.255", "the VM's netmask (dotted or /prefix)")
	fs.StringVar(&o.dns, "dns", "10.139.1.1,10.139.1.2", "DNS servers, comma-separated (empty: none)")
	fs.StringVar(&o.serverIP, "server-ip", "", "server identifier and source address of replies (default: the gateway)")
	fs.StringVar(&o.hostname, "hostname", "", "host name to give the VM (option 12; default: none)")
	fs.DurationVar(&o.leaseTime, "lease-time", dhcpd.DefaultLeaseDuration, "lease time")
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, pflag.ErrHelp) {
			return o, true, nil
		}
		return o, false, usagef("%v", err)
	}
	if fs.NArg() > 0 {
		return o, false, usagef("unexpected argument %q: %s takes only options", fs.Arg(0), a.prog)
	}
	for _, req := range []struct{ name, val string }{{"interface", o.ifname}, {"mac", o.mac}, {"ip", o.ip}, {"gateway", o.gateway}} {
		if req.val == "" {
			return o, false, usagef("--%s is required (see --help)", req.name)
		}
	}
	return o, false, nil
}

// lease builds the VM's lease from the options.
func (o dhcpdOptions) lease() (dhcpd.Lease, error) {
	var l dhcpd.Lease
	var err error
	if l.MAC, err = dhcpd.ParseMAC(o.mac); err != nil {
		return l, usagef("--mac: %v", err)
	}
	if l.IP, err = dhcpd.ParseIPv4("--ip", o.ip); err != nil {
		return l, usagef("%v", err)
	}
	if l.Gateway, err = dhcpd.ParseIPv4("--gateway", o.gateway); err != nil {
		return l, usagef("%v", err)
	}
	if l.Netmask, err = dhcpd.ParseNetmask(o.netmask); err != nil {
		return l, usagef("--netmask: %v", err)
	}
	if l.DNS, err = dhcpd.ParseIPv4List("--dns", o.dns); err != nil {
		return l, usagef("%v", err)
	}
	l.Duration = o.leaseTime
	l.Hostname = o.hostname
	return l, nil
}

// serverAddress is the server identifier: --server-ip, else the gateway.
func (o dhcpdOptions) serverAddress(l dhcpd.Lease) (net.IP, error) {
	if o.serverIP == "" {
		return l.Gateway, nil
	}
	ip, err := dhcpd.ParseIPv4("--server-ip", o.serverIP)
	if err != nil {
		return nil, usagef("%v", err)
	}
	return ip, nil
}

// runDHCPD is `qvm dhcpd`: serve one VM's lease on one interface until
// ctx ends (SIGTERM or SIGINT).
func runDHCPD(ctx context.Context, a *app, args []string) error {
	o, help, err := parseDHCPDFlags(a, args)
	if err != nil || help {
		return err
	}
	l, err := o.lease()
	if err != nil {
		return err
	}
	sid, err := o.serverAddress(l)
	if err != nil {
		return err
	}
	// A daemon's lease lines are its point: log at Info, or Debug when
	// the program logs debug (QVM_DEBUG).
	level := slog.LevelInfo
	if a.log.Enabled(ctx, slog.LevelDebug) {
		level = slog.LevelDebug
	}
	log := slog.New(slog.NewTextHandler(a.stderr, &slog.HandlerOptions{Level: level}))
	s, err := dhcpd.New(o.ifname, sid, []dhcpd.Lease{l}, log)
	if err != nil {
		return usagef("%v", err)
	}
	if err := s.Serve(ctx); err != nil {
		return err
	}
	st := s.Stats()
	log.Info("dhcpd stopped", "interface", o.ifname, "acks", st.Acks, "renewals", st.Renewals, "naks", st.Naks,
		"unknown_mac", st.UnknownMAC, "malformed", st.Malformed)
	return nil
}
