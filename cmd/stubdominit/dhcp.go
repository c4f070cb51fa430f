package main

import (
	"context"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"os/signal"
	"strings"

	"golang.org/x/sys/unix"

	"github.com/qvm-project/qvm/bootinit"
	"github.com/qvm-project/qvm/dhcpd"
	"github.com/qvm-project/qvm/stubdom/dmargs"
)

// dhcpdVerb is the first argument that makes this binary the DHCP server
// instead of pid 1.
const dhcpdVerb = "dhcpd"

// dhcpdCmd is the command that serves the guest's address on the bridge:
// this binary again, in its own process, because the server sandboxes the
// whole process it runs in.
func dhcpdCmd(nic dmargs.NIC, n dmargs.Net) (bootinit.Cmd, error) {
	exe, err := selfPath()
	if err != nil {
		return bootinit.Cmd{}, err
	}
	return bootinit.Cmd{
		Path:   exe,
		Args:   append([]string{"stubdominit", dhcpdVerb}, dhcpdArgs(nic, n)...),
		Env:    []string{},
		Stdout: os.Stdout,
		Stderr: os.Stdout,
	}, nil
}

// dhcpdArgs are the DHCP server's options for a guest's NIC and network.
func dhcpdArgs(nic dmargs.NIC, n dmargs.Net) []string {
	dns := make([]string, len(n.DNS))
	for i, d := range n.DNS {
		dns[i] = d.String()
	}
	return []string{
		"-interface", bridgeName,
		"-mac", nic.MAC.String(),
		"-ip", n.ClientIP.String(),
		"-gateway", n.Gateway.String(),
		"-netmask", net.IP(n.Netmask).String(),
		"-dns", strings.Join(dns, ","),
	}
}

// dhcpdLease parses the DHCP server's options back into its lease.
func dhcpdLease(args []string, stderr io.Writer) (ifname string, l dhcpd.Lease, err error) {
	fs := flag.NewFlagSet("stubdominit dhcpd", flag.ContinueOnError)
	fs.SetOutput(stderr)
	iface := fs.String("interface", "", "interface to serve on")
	mac := fs.String("mac", "", "the guest's MAC")
	ip := fs.String("ip", "", "the guest's IPv4 address")
	gw := fs.String("gateway", "", "the guest's gateway")
	mask := fs.String("netmask", "255.255.255.255", "the guest's netmask")
	dns := fs.String("dns", "", "DNS servers, comma-separated")
	if err := fs.Parse(args); err != nil {
		return "", l, err
	}
	if fs.NArg() > 0 {
		return "", l, fmt.Errorf("unexpected argument %q", fs.Arg(0))
	}
	if *iface == "" {
		return "", l, fmt.Errorf("-interface is required")
	}
	if l.MAC, err = dhcpd.ParseMAC(*mac); err != nil {
		return "", l, fmt.Errorf("-mac: %w", err)
	}
	if l.IP, err = dhcpd.ParseIPv4("-ip", *ip); err != nil {
		return "", l, err
	}
	if l.Gateway, err = dhcpd.ParseIPv4("-gateway", *gw); err != nil {
		return "", l, err
	}
	if l.Netmask, err = dhcpd.ParseNetmask(*mask); err != nil {
		return "", l, fmt.Errorf("-netmask: %w", err)
	}
	if l.DNS, err = dhcpd.ParseIPv4List("-dns", *dns); err != nil {
		return "", l, err
	}
	return *iface, l, nil
}

// runDHCPD serves one lease until SIGTERM; the server identifies itself
// with the gateway's address (the bridge has none of its own).
func runDHCPD(ctx context.Context, args []string) error {
	ifname, l, err := dhcpdLease(args, os.Stderr)
	if err != nil {
		return err
	}
	ctx, stop := signal.NotifyContext(ctx, unix.SIGTERM, unix.SIGINT)
	defer stop()
	// No uptime on these records: reading /proc/uptime would be a file
	// open, which the server's sandbox does not allow.
	log := slog.New(slog.NewTextHandler(os.Stdout, &slog.HandlerOptions{ReplaceAttr: dropTime})).With("prog", "stubdominit-dhcpd")
	s, err := dhcpd.New(ifname, l.Gateway, []dhcpd.Lease{l}, log)
	if err != nil {
		return err
	}
	log.Info("serving", "lease", l.String())
	return s.Serve(ctx)
}
