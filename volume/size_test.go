package volume

import (
	"strconv"
	"strings"
	"testing"
)

// TestParseSize: the forms qvm-volume resize accepts (qubesadmin's
// parse_size) and what it refuses.
func TestParseSize(t *testing.T) {
	good := map[string]int64{
		"0":             0,
		"21474836480":   20 * GiB,
		" 512 ":         512,
		"1K":            1000,
		"1kb":           1000,
		"3M":            3_000_000,
		"3MB":           3_000_000,
		"20G":           20_000_000_000,
		"20gb":          20_000_000_000,
		"4Ki":           4 * KiB,
		"4KiB":          4 * KiB,
		"4kib":          4 * KiB,
		"64Mi":          64 * MiB,
		"64MiB":         64 * MiB,
		"20Gi":          20 * GiB,
		"20GiB":         20 * GiB,
		"20 GiB":        20 * GiB,
		"  20GIB\n":     20 * GiB,
		"8589934591GiB": 8589934591 * GiB, // just under 2^63
	}
	for in, want := range good {
		got, err := ParseSize(in)
		if err != nil || got != want {
			t.Errorf("ParseSize(%q) = %d, %v; want %d", in, got, err, want)
		}
	}
	bad := map[string]string{
		"":                    "empty",
		"GiB":                 "not a whole number",
		"20T":                 "unknown unit",
		"20TiB":               "unknown unit",
		"512B":                "unknown unit",
		"20 G iB":             "unknown unit",
		"-1":                  "not a whole number",
		"-1G":                 "not a whole number",
		"+1G":                 "not a whole number",
		"1.5G":                "not a whole number",
		"1_000":               "not a whole number",
		"0x10":                "not a whole number",
		"8589934592GiB":       "too large",
		"9223372036854775808": "too large",
	}
	for in, want := range bad {
		got, err := ParseSize(in)
		if err == nil {
			t.Errorf("ParseSize(%q) = %d, want an error", in, got)
			continue
		}
		if !strings.Contains(err.Error(), want) || (want != "too large" && !strings.Contains(err.Error(), "GiB")) {
			t.Errorf("ParseSize(%q) error %q: want it to say %q and list the forms", in, err, want)
		}
	}
}

// FuzzParseSize: never panics; an accepted size is non-negative and is the
// digits times the unit's multiplier.
func FuzzParseSize(f *testing.F) {
	for _, s := range []string{"0", "20GiB", "20 gib", "1K", "3MB", "64Mi", "-1G", "1.5G", "", "Ki", "99999999999999999999", "9223372036854775807"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		n, err := ParseSize(s)
		if err != nil {
			return
		}
		if n < 0 {
			t.Fatalf("ParseSize(%q) = %d < 0", s, n)
		}
		u := strings.ToUpper(strings.TrimSpace(s))
		digits := strings.TrimRight(u, "KMGIB ")
		d, derr := strconv.ParseInt(digits, 10, 64)
		if derr != nil {
			t.Fatalf("ParseSize(%q) accepted %q, whose number part %q does not parse: %v", s, u, digits, derr)
		}
		if d != 0 && n%d != 0 {
			t.Fatalf("ParseSize(%q) = %d, not a multiple of %d", s, n, d)
		}
	})
}
