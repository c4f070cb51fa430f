package lifecycle

import (
	"os"
	"sort"
	"strings"

	"github.com/qvm-project/qvm/qubesdb"
	"github.com/qvm-project/qvm/vm"
)

// FeatureServicePrefix marks a feature that is a qvm-service setting:
// service.NAME = 1 or 0 becomes qubes-service/NAME.
const FeatureServicePrefix = "service."

// QubesDBInfo is what v is told about itself through its QubesDB keys.
func QubesDBInfo(v *vm.View) qubesdb.Info {
	info := qubesdb.Info{
		Name:        v.Name(),
		Type:        string(v.Class()),
		DefaultUser: v.Str("default_user"),
		Timezone:    hostTimezone(),
		Updateable:  v.Bool("updateable"),
		Debug:       v.Bool("debug"),
	}
	if t := v.Template(); t != nil {
		info.BaseTemplate = t.Name()
	}
	for _, name := range featureNames(v) {
		if svc, ok := strings.CutPrefix(name, FeatureServicePrefix); ok {
			if info.Services == nil {
				info.Services = map[string]bool{}
			}
			val, _ := v.Feature(name)
			info.Services[svc] = val != "" && val != "0"
		}
	}
	if v.NetVM() != nil {
		n := &qubesdb.Net{
			MAC:          v.Str("mac"),
			IP:           v.Str("visible_ip"),
			Netmask:      v.Str("visible_netmask"),
			Gateway:      v.Str("visible_gateway"),
			PrimaryDNS:   vm.PrimaryDNS,
			SecondaryDNS: vm.SecondaryDNS,
		}
		if v.IPv6() {
			n.IP6, n.Gateway6 = v.Str("visible_ip6"), v.Str("visible_gateway6")
		}
		info.Net = n
	}
	if v.Bool("provides_network") {
		info.NetVM = &qubesdb.NetVM{
			Network:      v.Str("gateway"),
			Gateway:      v.Str("gateway"),
			Netmask:      vm.VisibleNetmask,
			PrimaryDNS:   vm.PrimaryDNS,
			SecondaryDNS: vm.SecondaryDNS,
			Gateway6:     v.Str("gateway6"),
		}
	}
	return info
}

func featureNames(v *vm.View) []string {
	names := make([]string, 0, len(v.Def().Features))
	for k := range v.Def().Features {
		names = append(names, k)
	}
	sort.Strings(names)
	return names
}

// hostTimezone is dom0's time zone name, which the VMs follow.
func hostTimezone() string {
	if b, err := os.ReadFile("/etc/timezone"); err == nil {
		if tz := strings.TrimSpace(string(b)); tz != "" {
			return tz
		}
	}
	if link, err := os.Readlink("/etc/localtime"); err == nil {
		if i := strings.Index(link, "zoneinfo/"); i >= 0 {
			return link[i+len("zoneinfo/"):]
		}
	}
	return "UTC"
}
