package volume

import (
	"fmt"
	"math"
	"strconv"
	"strings"
)

// sizeUnits are the suffixes `qvm-volume resize` accepts, in the order Qubes
// tries them (qubesadmin.utils.parse_size): K, M, G and KB, MB, GB are
// decimal; Ki, Mi, Gi and KiB, MiB, GiB are binary. Case does not matter.
// Qubes has no T or B suffix, so neither do we.
var sizeUnits = []struct {
	suffix string // upper case
	mult   int64
}{
	{"K", 1000}, {"KB", 1000},
	{"M", 1000 * 1000}, {"MB", 1000 * 1000},
	{"G", 1000 * 1000 * 1000}, {"GB", 1000 * 1000 * 1000},
	{"KI", KiB}, {"KIB", KiB},
	{"MI", MiB}, {"MIB", MiB},
	{"GI", GiB}, {"GIB", GiB},
}

// sizeForms is the help text naming the accepted forms.
const sizeForms = "a number of bytes, or a number followed by K, M, G, KB, MB, GB (powers of 1000) " +
	"or Ki, Mi, Gi, KiB, MiB, GiB (powers of 1024), e.g. 20GiB"

// ParseSize reads a size the way `qvm-volume resize VM:VOLUME SIZE` does:
// bytes ("21474836480"), or a whole number with a unit suffix ("20GiB",
// "20 gib", "20G" = 20*1000^3). Surrounding spaces and case are ignored.
// Unlike Python's int(), signs and digit separators are refused.
func ParseSize(s string) (int64, error) {
	t := strings.ToUpper(strings.TrimSpace(s))
	if t == "" {
		return 0, fmt.Errorf("invalid size %q: empty; give %s", s, sizeForms)
	}
	num, mult := t, int64(1)
	if !allDigits(t) {
		found := false
		for _, u := range sizeUnits {
			if strings.HasSuffix(t, u.suffix) {
				num, mult, found = strings.TrimSpace(strings.TrimSuffix(t, u.suffix)), u.mult, true
				break
			}
		}
		if !found && t[len(t)-1] >= '0' && t[len(t)-1] <= '9' {
			return 0, fmt.Errorf("invalid size %q: %q is not a whole number; give %s", s, t, sizeForms)
		}
		if !found {
			return 0, fmt.Errorf("invalid size %q: unknown unit; give %s", s, sizeForms)
		}
	}
	if !allDigits(num) {
		return 0, fmt.Errorf("invalid size %q: %q is not a whole number; give %s", s, num, sizeForms)
	}
	n, err := strconv.ParseInt(num, 10, 64)
	if err != nil || n > math.MaxInt64/mult {
		return 0, fmt.Errorf("invalid size %q: too large (the limit is %d bytes)", s, int64(math.MaxInt64))
	}
	return n * mult, nil
}

func allDigits(s string) bool {
	if s == "" {
		return false
	}
	for i := 0; i < len(s); i++ {
		if s[i] < '0' || s[i] > '9' {
			return false
		}
	}
	return true
}
