package e2e

import (
	"slices"
	"strings"
	"testing"
)

func TestOtherDomains(t *testing.T) {
	const list = `Name                                        ID   Mem VCPUs	State	Time(s)
Domain-0                                     0  1024     2     r-----     108.7
(null)                                       4    39     1     --p---       0.0
gone                                         3     0     1     --p--d       0.0
work                                         5   400     1     -b----       2.0
`
	got := otherDomains(list)
	want := []xlDomain{{"(null)", "4", "--p---"}, {"gone", "3", "--p--d"}, {"work", "5", "-b----"}}
	if !slices.Equal(got, want) {
		t.Errorf("otherDomains: %q; want %q", got, want)
	}
	var going []string
	for _, d := range got {
		if d.going() {
			going = append(going, d.Name)
		}
	}
	if !slices.Equal(going, []string{"(null)", "gone"}) {
		t.Errorf("going: %q; want the nameless and the dying one", going)
	}
	if got := otherDomains(strings.Join(strings.SplitN(list, "\n", 3)[:2], "\n")); len(got) != 0 {
		t.Errorf("dom0 alone: %q", got)
	}
}
