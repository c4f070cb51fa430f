// Command qrexec is `make bench-qrexec`: inside the nested Xen of the test
// bed (one boot, one run) it moves the same bytes out of a running PV guest
// two ways, with `qvm-run --pass-io` (qrexec over vchan) and over TCP
// across the VM's vif (busybox nc in the guest, a dom0 listener at the
// VM's gateway address), and times round trips of `qvm-run VM true`. The
// last line reads:
//
//	qrexec: pass-io A MiB/s tcp B MiB/s ratio A/B run-true C ms
//
// The bytes are -mib MiB of /dev/zero in the guest, read by `head -c`
// (no disc, no compression on either path). Both rates run from starting
// qvm-run to the last byte in dom0, so both carry one qvm-run start.
//
// dom0's VM firewall (package vmfirewall) drops everything a VM sends to
// dom0; for the TCP side the bench inserts, in this throwaway bed only,
// one rule accepting TCP to its own port before that drop.
package main

import (
	"context"
	"flag"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"regexp"
	"strings"
	"time"

	"github.com/google/nftables"
	"github.com/google/nftables/binaryutil"
	"github.com/google/nftables/expr"
	"golang.org/x/sys/unix"

	"github.com/qvm-project/qvm/bench/bedbench"
	"github.com/qvm-project/qvm/vm"
	"github.com/qvm-project/qvm/vmfirewall"
)

const (
	vmName  = "bench"
	tcpPort = 5001
)

func main() {
	inside := flag.Bool("inside", false, "measure (in dom0)")
	mib := flag.Int("mib", 256, "MiB to move out of the guest each way")
	runs := flag.Int("runs", 10, "round trips of qvm-run VM true")
	flag.Parse()
	if *inside {
		if err := measure(*mib, *runs); err != nil {
			fmt.Fprintf(os.Stderr, "bench-qrexec: %v\n", err)
			os.Exit(1)
		}
		return
	}
	os.Exit(bedbench.Host("bench-qrexec", []string{fmt.Sprintf("-mib=%d", *mib), fmt.Sprintf("-runs=%d", *runs)},
		regexp.MustCompile(`(?m)^qrexec: .*$`)))
}

func measure(mib, runs int) error {
	if err := bedbench.InstallKernel(); err != nil {
		return err
	}
	// A PV guest with the agent and a lease on its vif.
	if _, err := bedbench.Sh("qvm-create", "--class", "StandaloneVM", "--label", "red",
		"--property", "virt_mode=pv", "--property", "memory=256", "--property", "maxmem=0",
		"--property", "vcpus=1", "--property", "kernel="+bedbench.KernelName,
		"--property", "qrexec_timeout=600",
		"--property", "kernelopts=quiet qvm.qrexec=1 qvm.dhcp=eth0 qvm.after=wait", vmName); err != nil {
		return err
	}
	ip, err := bedbench.Sh("qvm-prefs", vmName, "visible_ip")
	if err != nil {
		return err
	}
	ip = strings.TrimSpace(ip)
	t0 := time.Now()
	if _, err := bedbench.Sh("qvm-start", vmName); err != nil {
		return err
	}
	// The first qvm-run waits for the agent; then the guest's address (the
	// test guest only prints its lease).
	if _, err := bedbench.Sh("qvm-run", "-u", "root", vmName,
		// (eth0 comes with the netfront module the guest loads for its lease)
		fmt.Sprintf("for i in $(seq 600); do ip link show eth0 >/dev/null 2>&1 && break; sleep 0.2; done; "+
			"ip link set eth0 up && ip addr add %s/32 dev eth0 && ip route add %s dev eth0", ip, vm.Dom0Gateway)); err != nil {
		return err
	}
	fmt.Printf("guest up with its agent and address %s in %.1f s\n", ip, time.Since(t0).Seconds())
	if err := allowTCP(tcpPort); err != nil {
		return err
	}
	ln, err := net.Listen("tcp", fmt.Sprintf("%s:%d", vm.Dom0Gateway, tcpPort))
	if err != nil {
		return err
	}
	defer ln.Close()

	// Warm both paths once with 1 MiB.
	if _, err := passIO(1 << 20); err != nil {
		return err
	}
	if _, err := overTCP(ln, 1<<20); err != nil {
		return err
	}
	n := int64(mib) << 20
	pd, err := passIO(n)
	if err != nil {
		return err
	}
	fmt.Printf("qvm-run --pass-io: %d MiB in %.2f s\n", mib, pd.Seconds())
	td, err := overTCP(ln, n)
	if err != nil {
		return err
	}
	fmt.Printf("tcp over the vif: %d MiB in %.2f s\n", mib, td.Seconds())

	var trips []float64
	for i := 0; i < runs; i++ {
		ms, err := bedbench.Timed("qvm-run", "-q", vmName, "true")
		if err != nil {
			return err
		}
		trips = append(trips, ms)
	}
	fmt.Printf("qvm-run %s true: %.0f ms median of %d (%v)\n", vmName, bedbench.Median(trips), runs, trips)
	pass := float64(mib) / pd.Seconds()
	tcp := float64(mib) / td.Seconds()
	fmt.Printf("qrexec: pass-io %.1f MiB/s tcp %.1f MiB/s ratio %.2f run-true %.0f ms\n", pass, tcp, pass/tcp, bedbench.Median(trips))
	return nil
}

// guestZeros is the guest command that writes n bytes.
func guestZeros(n int64) string { return fmt.Sprintf("head -c %d /dev/zero", n) }

// passIO reads n bytes out of the guest through qvm-run --pass-io.
func passIO(n int64) (time.Duration, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, "qvm-run", "--pass-io", "--no-filter-escape-chars", vmName, guestZeros(n))
	out, err := cmd.StdoutPipe()
	if err != nil {
		return 0, err
	}
	var errOut strings.Builder
	cmd.Stderr = &errOut
	start := time.Now()
	if err := cmd.Start(); err != nil {
		return 0, err
	}
	got, cerr := io.Copy(io.Discard, out)
	err = cmd.Wait()
	d := time.Since(start)
	if err != nil || cerr != nil {
		return 0, fmt.Errorf("qvm-run --pass-io %s: %v %v\n%s", vmName, err, cerr, errOut.String())
	}
	if got != n {
		return 0, fmt.Errorf("qvm-run --pass-io %s: %d bytes, want %d", vmName, got, n)
	}
	return d, nil
}

// overTCP has the guest send n bytes to ln with nc and returns the time
// from starting qvm-run to the last byte in dom0.
func overTCP(ln net.Listener, n int64) (time.Duration, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Minute)
	defer cancel()
	type result struct {
		got int64
		at  time.Time
		err error
	}
	res := make(chan result, 1)
	go func() {
		c, err := ln.Accept()
		if err != nil {
			res <- result{err: err}
			return
		}
		defer c.Close()
		stop := context.AfterFunc(ctx, func() { c.Close() })
		defer stop()
		got, err := io.CopyN(io.Discard, c, n)
		res <- result{got, time.Now(), err}
	}()
	cmd := exec.CommandContext(ctx, "qvm-run", "-q", vmName,
		fmt.Sprintf("%s | nc %s %d", guestZeros(n), vm.Dom0Gateway, tcpPort))
	var out strings.Builder
	cmd.Stdout, cmd.Stderr = &out, &out
	start := time.Now()
	if err := cmd.Start(); err != nil {
		return 0, err
	}
	r := <-res
	// The listener closed its end after n bytes: nc ends, and qvm-run.
	werr := cmd.Wait()
	if r.err != nil {
		return 0, fmt.Errorf("tcp from %s: %d bytes, want %d: %w (qvm-run: %v %s)", vmName, r.got, n, r.err, werr, out.String())
	}
	return r.at.Sub(start), nil
}

// allowTCP inserts, first in qvm's vm-input chain, a rule accepting TCP
// to port from the VMs: the bench's own listener, in the bed only.
func allowTCP(port uint16) error {
	c, err := nftables.New()
	if err != nil {
		return err
	}
	tab := &nftables.Table{Family: nftables.TableFamilyINet, Name: vmfirewall.TableName}
	c.InsertRule(&nftables.Rule{
		Table: tab,
		Chain: &nftables.Chain{Name: "vm-input", Table: tab},
		Exprs: []expr.Any{
			&expr.Meta{Key: expr.MetaKeyL4PROTO, Register: 1},
			&expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: []byte{unix.IPPROTO_TCP}},
			&expr.Payload{DestRegister: 1, Base: expr.PayloadBaseTransportHeader, Offset: 2, Len: 2},
			&expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: binaryutil.BigEndian.PutUint16(port)},
			&expr.Verdict{Kind: expr.VerdictAccept},
		},
	})
	if err := c.Flush(); err != nil {
		return fmt.Errorf("accept tcp port %d in table %s: %w", port, vmfirewall.TableName, err)
	}
	return nil
}
