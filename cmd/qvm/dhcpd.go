package main

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"syscall"

	"github.com/spf13/pflag"

	"github.com/qvm-project/qvm/dhcpd"
)

// runDHCPD is `qvm dhcpd`: serve one VM's lease on one interface until
// ctx ends (SIGTERM or SIGINT). Its options are dhcpd.FlagSet's.
func runDHCPD(ctx context.Context, a *app, args []string) error {
	fs := dhcpd.NewFlagSet(a.prog)
	fs.SetOutput(a.stderr)
	fs.Usage = func() {
		fmt.Fprintf(a.stderr, "usage: %s --interface IF --mac MAC --ip IP --gateway GW [options]\n\n", a.prog)
		fmt.Fprintf(a.stderr, "Serve one VM its address by DHCP on one interface until stopped (SIGTERM).\n"+
			"The process drops its privileges and confines itself with seccomp once bound.\n\n")
		fs.PrintDefaults()
	}
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, pflag.ErrHelp) {
			return nil
		}
		return usagef("%v", err)
	}
	cfg, err := fs.Config()
	if err != nil {
		return usagef("%v", err)
	}
	// A daemon's lease lines are its point: log at Info, or Debug when
	// the program logs debug (QVM_DEBUG).
	level := slog.LevelInfo
	if a.log.Enabled(ctx, slog.LevelDebug) {
		level = slog.LevelDebug
	}
	log := slog.New(slog.NewTextHandler(a.stderr, &slog.HandlerOptions{Level: level}))
	s, err := dhcpd.New(cfg.Interface, cfg.Server(), []dhcpd.Lease{cfg.Lease}, log)
	if err != nil {
		return usagef("%v", err)
	}
	if cfg.DieWithParent {
		s.ParentDeathSignal = syscall.SIGKILL
	}
	if err := s.Serve(ctx); err != nil {
		return err
	}
	st := s.Stats()
	log.Info("dhcpd stopped", "interface", cfg.Interface, "acks", st.Acks, "renewals", st.Renewals, "naks", st.Naks,
		"unknown_mac", st.UnknownMAC, "malformed", st.Malformed)
	return nil
}
