// Package xlcfg prepares the xl.cfg that `qvm-start --dry-run` prints for
// the benchmarks' `xl create` side, so that xl starts the same domain the
// way qvm does.
package xlcfg

import (
	"context"
	"regexp"
	"strings"

	"github.com/qvm-project/qvm/loopdev"
)

// diskRE matches the file target of a VM image in an xl.cfg disk line.
var diskRE = regexp.MustCompile(`target=(/[^,"']+\.img)`)

// OnLoops puts the VM image files that cfg's disks name on autoclear loop
// devices (as qvm-start does with package loopdev) and rewrites their
// disks as phy disks of those devices with qvm's block script, which only
// checks the device (Xen's own script needs a shell dom0 may not have).
// It returns the new config and the devices, to be closed once the domain
// holds them; on error the devices opened so far are closed.
func OnLoops(ctx context.Context, cfg string) (string, []*loopdev.Device, error) {
	var loops []*loopdev.Device
	for _, m := range diskRE.FindAllStringSubmatch(cfg, -1) {
		dev, err := loopdev.Attach(ctx, m[1], false)
		if err != nil {
			for _, l := range loops {
				l.Close()
			}
			return "", nil, err
		}
		loops = append(loops, dev)
		cfg = strings.Replace(cfg, "target="+m[1], "backendtype=phy,script=block-qvm,target="+dev.Path, 1)
	}
	return cfg, loops, nil
}
