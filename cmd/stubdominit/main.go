// Command stubdominit is pid 1 of qvm's Linux stubdomain, the small PV
// domain that runs an HVM guest's device model (QEMU) outside dom0.
//
// At boot it mounts the kernel file systems, loads the Xen frontend and
// network modules (xen-privcmd with unrestricted=1, so QEMU may make the
// device-model hypercalls for its target), and reads through xenstore
// (/dev/xen/xenbus): its target guest (its own key "target"), the guest's
// vm path, and QEMU's arguments from the sorted <vm>/image/dm-argv entries
// that libxl wrote. It takes out the arguments meant for itself
// (-qubes-net, -qubes-audio; see package stubdom/dmargs), and when the
// guest is networked it bridges its netfront eth0 (MAC fe:ff:ff:ff:ff:fe)
// with the tap device QEMU will open (fe:ff:ff:ff:ff:fd) on br0, where a
// DHCP server (package dhcpd, in its own sandboxed process: this binary
// run as "stubdominit dhcpd ...") offers the guest exactly its address,
// netmask, gateway and DNS. Then it starts QEMU with libxl's arguments
// plus a QMP socket of its own, and relays that socket to dom0 over a
// vchan at device-model/<target>/qmp-vchan (Xen's vchan-socket-proxy in
// server mode), where libxl's proxy connects.
//
// Its log goes to console 0, which libxl writes to
// /var/log/xen/qemu-dm-<guest>.log in dom0. It stays pid 1, reaps every
// process, and powers the stubdomain off when QEMU exits.
package main

import (
	"context"
	"fmt"
	"log/slog"
	"os"
	"time"

	"github.com/qvm-project/qvm/bootinit"
)

func main() {
	if len(os.Args) > 1 && os.Args[1] == dhcpdVerb {
		if err := runDHCPD(context.Background(), os.Args[2:]); err != nil {
			fmt.Fprintf(os.Stderr, "stubdominit dhcpd: %v\n", err)
			os.Exit(1)
		}
		return
	}
	log := newLogger(os.Stdout)
	if os.Getpid() != 1 {
		log.Error("stubdominit runs as pid 1 of the stubdomain (or as `stubdominit dhcpd ...`)")
		os.Exit(2)
	}
	err := func() (err error) {
		defer func() {
			if p := recover(); p != nil {
				err = fmt.Errorf("panic: %v", p)
			}
		}()
		return run(context.Background(), log)
	}()
	if err != nil {
		log.Error("FAILED: " + err.Error())
	}
	log.Info("powering off")
	if err := bootinit.PowerOff(); err != nil {
		log.Error("FAILED: " + err.Error())
	}
	// Returning from pid 1 would panic the kernel.
	time.Sleep(time.Second)
}

// newLogger logs to the console, each record with the kernel's uptime.
func newLogger(w *os.File) *slog.Logger {
	h := slog.NewTextHandler(w, &slog.HandlerOptions{ReplaceAttr: dropTime})
	return slog.New(uptimeHandler{h}).With("prog", "stubdominit")
}

// dropTime removes the wall-clock time from log records: the stubdomain's
// clock is not what tells where its start-up time goes.
func dropTime(groups []string, a slog.Attr) slog.Attr {
	if len(groups) == 0 && a.Key == slog.TimeKey {
		return slog.Attr{}
	}
	return a
}

// uptimeHandler adds the kernel's uptime to every record, so the log shows
// where the stubdomain's start-up time goes.
type uptimeHandler struct{ slog.Handler }

func (h uptimeHandler) Handle(ctx context.Context, r slog.Record) error {
	r.AddAttrs(slog.String("up", fmt.Sprintf("%.3f", uptime())))
	return h.Handler.Handle(ctx, r)
}

func (h uptimeHandler) WithAttrs(attrs []slog.Attr) slog.Handler {
	return uptimeHandler{h.Handler.WithAttrs(attrs)}
}

func (h uptimeHandler) WithGroup(name string) slog.Handler {
	return uptimeHandler{h.Handler.WithGroup(name)}
}
