package main

import (
	"strings"
	"testing"
)

// paritySetup makes a system like a Qubes user's: two templates, a netvm
// chain, an offline DispVM template and its disposable, tags and features.
func paritySetup(t *testing.T) *env {
	t.Helper()
	e := newEnv(t)
	for _, argv := range [][]string{
		{"qvm-create", "--class", "TemplateVM", "fedora-41", "-l", "black"},
		{"qvm-create", "--class", "TemplateVM", "debian-12", "-l", "black"},
		{"qvm-create", "sys-net", "-t", "fedora-41", "-l", "red", "--prop", "provides_network=True", "--prop", "netvm="},
		{"qvm-create", "sys-firewall", "-t", "fedora-41", "-l", "green", "--prop", "provides_network=True", "--prop", "netvm=sys-net"},
		{"qvm-create", "work", "-t", "debian-12", "-l", "blue", "--prop", "netvm=sys-firewall", "--prop", "maxmem=1000"},
		{"qvm-create", "Banking", "-t", "fedora-41", "-l", "yellow", "--prop", "netvm=", "--prop", "maxmem=800"},
		{"qvm-create", "dvm", "-t", "fedora-41", "-l", "red", "--prop", "template_for_dispvms=True", "--prop", "netvm="},
		{"qvm-create", "--disp", "-t", "dvm", "disp1"},
		{"qvm-tags", "work", "add", "personal", "net"},
		{"qvm-features", "work", "internal", "1"},
		{"qvm-features", "Banking", "servicevm", "true"},
		{"qvm-features", "sys-net", "updates-available", "1"},
		{"qvm-features", "sys-net", "cool", ""},
	} {
		e.ok(argv...)
	}
	return e
}

// TestLsParity checks qvm-ls' selection, filtering, sorting and formats
// against Qubes' behaviour, exactly.
func TestLsParity(t *testing.T) {
	e := paritySetup(t)
	simple := func(rows ...string) string {
		return strings.Join(rows, "\n") + "\n"
	}
	for _, c := range []struct {
		argv []string
		want string
	}{
		{[]string{"qvm-ls"}, simple(
			"NAME          STATE    CLASS       LABEL   TEMPLATE   NETVM",
			"Banking       Halted   AppVM       yellow  fedora-41  -",
			"debian-12     Halted   TemplateVM  black   -          -",
			"disp1         Halted   DispVM      red     dvm        -",
			"dom0          Running  AdminVM     black   -          -",
			"dvm           Halted   AppVM       red     fedora-41  -",
			"fedora-41     Halted   TemplateVM  black   -          -",
			"sys-firewall  Halted   AppVM       green   fedora-41  sys-net",
			"sys-net       Halted   AppVM       red     fedora-41  -",
			"work          Halted   AppVM       blue    debian-12  sys-firewall")},
		// Shell wildcards, as Qubes' fnmatch.
		{[]string{"qvm-ls", "--raw-list", "*-4?"}, "fedora-41\n"},
		{[]string{"qvm-ls", "--raw-list", "????"}, "dom0\nwork\n"},
		{[]string{"qvm-ls", "--raw-list", "sys-[fn]*", "d*"}, "debian-12\ndisp1\ndom0\ndvm\nsys-firewall\nsys-net\n"},
		{[]string{"qvm-ls", "--raw-list", "??????-[!1]*"}, "fedora-41\n"},
		{[]string{"qvm-ls", "--raw-list", "nomatch*"}, ""},
		{[]string{"qvm-ls", "--raw-list", "--all", "--exclude", "dom0", "--exclude", "work", "--class", "AppVM"}, "Banking\ndvm\nsys-firewall\nsys-net\n"},
		// Filters; --class and --label take several values.
		{[]string{"qvm-ls", "--class", "AppVM", "DispVM", "--label", "red"}, simple(
			"NAME     STATE   CLASS   LABEL  TEMPLATE   NETVM",
			"disp1    Halted  DispVM  red    dvm        -",
			"dvm      Halted  AppVM   red    fedora-41  -",
			"sys-net  Halted  AppVM   red    fedora-41  -")},
		{[]string{"qvm-ls", "--raw-list", "--tags", "net", "other"}, "work\n"},
		{[]string{"qvm-ls", "--raw-list", "--exclude-tags", "personal", "--class", "TemplateVM"}, "debian-12\nfedora-41\n"},
		{[]string{"qvm-ls", "--raw-list", "--template-source", "debian-12", "dvm"}, "disp1\nwork\n"},
		{[]string{"qvm-ls", "--raw-list", "--template-source", ""}, "debian-12\ndom0\nfedora-41\n"},
		{[]string{"qvm-ls", "--raw-list", "--netvm-is", "sys-net", "sys-firewall"}, "sys-firewall\nwork\n"},
		{[]string{"qvm-ls", "--raw-list", "--internal", "y"}, "work\n"},
		{[]string{"qvm-ls", "--raw-list", "--internal", "no", "--servicevm", "n", "--class", "AppVM"}, "dvm\nsys-firewall\nsys-net\n"},
		{[]string{"qvm-ls", "--raw-list", "--servicevm", "yes"}, "Banking\n"},
		{[]string{"qvm-ls", "--raw-list", "--pending-update"}, "sys-net\n"},
		{[]string{"qvm-ls", "--raw-list", "--features", "internal=1"}, "work\n"},
		{[]string{"qvm-ls", "--raw-list", "--features", `cool=""`}, "sys-net\n"},
		{[]string{"qvm-ls", "--raw-list", "--features", "cool=", "--class", "AppVM"}, "Banking\ndvm\nsys-firewall\nwork\n"},
		{[]string{"qvm-ls", "--raw-list", "--prefs", "maxmem=800"}, "Banking\n"},
		{[]string{"qvm-ls", "--raw-list", "--prefs", "netvm=None", "--class", "AppVM"}, "Banking\ndvm\nsys-net\n"},
		{[]string{"qvm-ls", "--raw-list", "--prefs", "label=blue", "provides_network=False"}, "work\n"},
		{[]string{"qvm-ls", "--raw-list", "--prefs", "nonexistent="}, ""},
		{[]string{"qvm-ls", "--raw-list", "--prefs", "stubdom_mem=", "--class", "TemplateVM"}, "debian-12\nfedora-41\n"},
		{[]string{"qvm-ls", "--running"}, simple(
			"NAME  STATE    CLASS    LABEL  TEMPLATE  NETVM",
			"dom0  Running  AdminVM  black  -         -")},
		{[]string{"qvm-ls", "--paused"}, "NAME  STATE  CLASS  LABEL  TEMPLATE  NETVM\n"},
		{[]string{"qvm-ls", "--raw-list", "--running", "--halted", "d*"}, "debian-12\ndisp1\ndom0\ndvm\n"},
		// Sorting: by text (case-sensitive unless --ignore-case), by
		// number for the numeric columns, not at all by an absent column.
		{[]string{"qvm-ls", "--fields", "name,label", "--sort", "label", "--reverse", "--class", "AppVM"}, simple(
			"NAME          LABEL",
			"Banking       yellow",
			"dvm           red",
			"sys-net       red",
			"sys-firewall  green",
			"work          blue")},
		{[]string{"qvm-ls", "--field", "NAME,MAXMEM", "--sort", "maxmem", "--class", "AppVM", "AdminVM"}, simple(
			"NAME          MAXMEM",
			"dom0          -",
			"Banking       800",
			"work          1000",
			"dvm           4000",
			"sys-firewall  4000",
			"sys-net       4000")},
		{[]string{"qvm-ls", "-O", "name", "--sort", "NAME", "--reverse", "--ignore-case", "--class", "AppVM"}, "NAME\nwork\nsys-net\nsys-firewall\ndvm\nBanking\n"},
		{[]string{"qvm-ls", "-O", "name", "--sort", "state", "--reverse", "--class", "AppVM"}, "NAME\nBanking\ndvm\nsys-firewall\nsys-net\nwork\n"},
		// The network tree (qvm: dom0 heads its clients).
		{[]string{"qvm-ls", "--tree", "--fields", "name,netvm"}, simple(
			"NAME            NETVM",
			"Banking         -",
			"debian-12       -",
			"disp1           -",
			"dvm             -",
			"fedora-41       -",
			"dom0            -",
			"sys-net         -",
			"└─sys-firewall  sys-net",
			"  └─work        sys-firewall")},
		// Formats and columns.
		{[]string{"qvm-ls", "--format", "prefs", "work", "dom0"}, simple(
			"NAME  LABEL  TEMPLATE   NETVM         VCPUS  INITIALMEM  MAXMEM  VIRT-MODE",
			"dom0  black  -          -             -      -           -       -",
			"work  blue   debian-12  sys-firewall  2      400         1000    pvh")},
		{[]string{"qvm-ls", "-k", "work"}, simple(
			"NAME  STATE   CLASS  TEMPLATE   KERNEL  KERNELOPTS",
			"work  Halted  AppVM  debian-12  -       -")},
		{[]string{"qvm-ls", "-n", "sys-firewall"}, simple(
			"NAME          STATE   NETVM    IP          IPBACK      GATEWAY",
			"sys-firewall  Halted  sys-net  10.137.0.4  10.137.0.4  10.137.0.3")},
		{[]string{"qvm-ls", "-d", "work", "dom0"}, simple(
			"NAME  STATE    DISK  PRIV-CURR  PRIV-MAX  PRIV-USED  ROOT-CURR  ROOT-MAX  ROOT-USED",
			"dom0  Running  0     0          0         0          0          0         0",
			"work  Halted   0     0          2048      0%         0          10240     0%")},
		{[]string{"qvm-ls", "-O", "name,virt_mode,class,memory,priv-pool,root_pool,no-such,flags", "work", "dom0"}, simple(
			"NAME  VIRT-MODE  CLASS    MEMORY  PRIV-POOL    ROOT-POOL    NO-SUCH  FLAGS",
			"dom0  -          AdminVM  -       -            -            -        0r------",
			"work  pvh        AppVM    -       varlibqubes  varlibqubes  -        a-------")},
		{[]string{"qvm-ls", "--raw-data", "-O", "name,class,label", "work", "dom0"}, "dom0|AdminVM|black\nwork|AppVM|blue\n"},
		{[]string{"qvm-ls", "--fields", "name,flags", "sys-net", "disp1", "fedora-41"}, simple(
			"NAME       FLAGS",
			"disp1      d-------",
			"fedora-41  t-U-----",
			"sys-net    a--N----")},
	} {
		if got := e.ok(c.argv...); got != c.want {
			t.Errorf("%s:\n%s\nwant:\n%s", strings.Join(c.argv, " "), got, c.want)
		}
	}
}

// TestLsHelpListings: --help-formats and --help-columns as Qubes lays them
// out (textwrap at 80 columns).
func TestLsHelpListings(t *testing.T) {
	e := newEnv(t)
	want := "Available formats:\n" +
		"  disk     NAME,STATE,DISK,PRIV-CURR,PRIV-MAX,PRIV-USED,ROOT-CURR,ROOT-MAX,ROOT-USED\n" +
		"  full     NAME,STATE,CLASS,LABEL,QID,XID,UUID\n" +
		"  kernel   NAME,STATE,CLASS,TEMPLATE,KERNEL,KERNELOPTS\n" +
		"  network  NAME,STATE,NETVM,IP,IPBACK,GATEWAY\n" +
		"  prefs    NAME,LABEL,TEMPLATE,NETVM,VCPUS,INITIALMEM,MAXMEM,VIRT_MODE\n" +
		"  simple   NAME,STATE,CLASS,LABEL,TEMPLATE,NETVM\n" +
		"  json     (qvm) every property and the state of each VM, as a JSON array\n\n"
	if got := e.ok("qvm-ls", "--help-formats"); got != want {
		t.Errorf("--help-formats:\n%s\nwant:\n%s", got, want)
	}
	got := e.ok("qvm-ls", "--help-columns")
	for _, line := range []string{
		"Available columns:\n  CLASS      Class of the qube.\n  DISK       Total disk utilisation.\n",
		"  FLAGS      Various flags: type, power state, updateable, provides_network,\n" +
			"               installed_by_rpm, internal, debug, autostart.\n  GATEWAY    Network gateway.\n  MEMORY     Memory currently used by VM\n",
		"  PRIV-USED  Disk utilisation by private image as a percentage of available\n               space.\n",
		"  STATE      Current power state.\n\n" +
			"Additionally any VM property may be used as a column, see qvm-prefs --help-properties for available values\n\n",
	} {
		if !strings.Contains(got, line) {
			t.Errorf("--help-columns lacks %q:\n%s", line, got)
		}
	}
}

func TestWrapText(t *testing.T) {
	// What Python's textwrap.fill gives for the same input.
	for _, c := range []struct{ in, want string }{
		{"FLAGS      Various flags: type, power state, updateable, provides_network, installed_by_rpm, internal, debug, autostart.",
			"  FLAGS      Various flags: type, power state, updateable, provides_network,\n               installed_by_rpm, internal, debug, autostart."},
		{"X          " + strings.Repeat("a", 100),
			"  X          " + strings.Repeat("a", 67) + "\n               " + strings.Repeat("a", 33)},
		{"short", "  short"},
	} {
		if got := wrapText(c.in, 80, "  ", strings.Repeat(" ", 15)); got != c.want {
			t.Errorf("wrapText(%q):\n%q\nwant\n%q", c.in, got, c.want)
		}
	}
}

func TestFnmatch(t *testing.T) {
	for _, c := range []struct {
		pat string
		yes []string
		no  []string
	}{
		{"fedora*", []string{"fedora", "fedora-41"}, []string{"xfedora"}},
		{"?ork", []string{"work"}, []string{"ork", "wwork"}},
		{"[!a-c]x", []string{"dx", "-x"}, []string{"ax", "cx"}},
		{"[a-]x", []string{"ax", "-x"}, []string{"bx"}},
		{"[]]x", []string{"]x"}, []string{"x"}},
		{"a[b", []string{"a[b"}, []string{"ab"}},
		{"a.b", []string{"a.b"}, []string{"axb"}},
	} {
		re := fnmatchRE(c.pat)
		for _, s := range c.yes {
			if !re.MatchString(s) {
				t.Errorf("%q does not match %q", c.pat, s)
			}
		}
		for _, s := range c.no {
			if re.MatchString(s) {
				t.Errorf("%q matches %q", c.pat, s)
			}
		}
	}
}
