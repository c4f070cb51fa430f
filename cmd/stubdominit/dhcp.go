package main

import (
	"context"
	"log/slog"
	"net"
	"os"
	"os/signal"

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
		Args:   append([]string{"stubdominit", dhcpdVerb}, dhcpdConfig(nic, n).Args()...),
		Env:    []string{},
		Stdout: os.Stdout,
		Stderr: os.Stdout,
	}, nil
}

// dhcpdConfig is what the DHCP server serves: the guest's lease on the
// bridge, identified with the gateway's address (the bridge has none of
// its own).
func dhcpdConfig(nic dmargs.NIC, n dmargs.Net) dhcpd.Config {
	dns := make([]net.IP, len(n.DNS))
	for i, d := range n.DNS {
		dns[i] = d.AsSlice()
	}
	return dhcpd.Config{Interface: bridgeName, Lease: dhcpd.Lease{
		MAC: nic.MAC, IP: n.ClientIP.AsSlice(), Gateway: n.Gateway.AsSlice(), Netmask: n.Netmask, DNS: dns}}
}

// dhcpdParse reads the DHCP server's options back.
func dhcpdParse(args []string) (dhcpd.Config, error) {
	fs := dhcpd.NewFlagSet("stubdominit dhcpd")
	if err := fs.Parse(args); err != nil {
		return dhcpd.Config{}, err
	}
	return fs.Config()
}

// runDHCPD serves one lease until SIGTERM.
func runDHCPD(ctx context.Context, args []string) error {
	cfg, err := dhcpdParse(args)
	if err != nil {
		return err
	}
	ctx, stop := signal.NotifyContext(ctx, unix.SIGTERM, unix.SIGINT)
	defer stop()
	// No uptime on these records: reading /proc/uptime would be a file
	// open, which the server's sandbox does not allow.
	log := slog.New(slog.NewTextHandler(os.Stdout, &slog.HandlerOptions{ReplaceAttr: dropTime})).With("prog", "stubdominit-dhcpd")
	s, err := dhcpd.New(cfg.Interface, cfg.Server(), []dhcpd.Lease{cfg.Lease}, log)
	if err != nil {
		return err
	}
	log.Info("serving", "lease", cfg.Lease.String())
	return s.Serve(ctx)
}
