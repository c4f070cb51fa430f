package main

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"sort"
	"strconv"
	"strings"

	"github.com/qvm-project/qvm/store"
	"github.com/qvm-project/qvm/vm"
	"github.com/qvm-project/qvm/volume"
)

// lsFormats are qvm-ls' preset column sets, as Qubes has them (json is
// qvm's own, for scripts).
var lsFormats = map[string][]string{
	"simple":  {"name", "state", "class", "label", "template", "netvm"},
	"network": {"name", "state", "netvm", "ip", "ipback", "gateway"},
	"kernel":  {"name", "state", "class", "template", "kernel", "kernelopts"},
	"full":    {"name", "state", "class", "label", "qid", "xid", "uuid"},
	"prefs":   {"name", "label", "template", "netvm", "vcpus", "initialmem", "maxmem", "virt_mode"},
	"disk":    {"name", "state", "disk", "priv-curr", "priv-max", "priv-used", "root-curr", "root-max", "root-used"},
}

// lsFormatNames are the formats --format takes, in Qubes' order of
// argparse choices, then json.
var lsFormatNames = []string{"simple", "network", "kernel", "full", "prefs", "disk", "json"}

// lsColumn is one of qvm-ls' own columns (beyond plain properties): how to
// compute a cell ("" prints as "-") and what --help-columns says of it.
type lsColumn struct {
	cell func(v *vm.View, disk diskUsage) string
	doc  string
	// hidden columns are not in --help-columns (nor in Qubes' list).
	hidden bool
}

// lsColumns are Qubes' columns that are not properties, with IPBACK (R3's,
// which R4 lists only through the network format) and INITIALMEM (R3's
// name of memory, in the prefs format).
var lsColumns = map[string]lsColumn{
	"STATE": {func(v *vm.View, _ diskUsage) string { return string(v.Runtime().State) }, "Current power state.", false},
	"CLASS": {func(v *vm.View, _ diskUsage) string { return string(v.Class()) }, "Class of the qube.", false},
	"GATEWAY": {func(v *vm.View, _ diskUsage) string {
		return v.Str("visible_gateway")
	}, "Network gateway.", false},
	"MEMORY": {func(v *vm.View, _ diskUsage) string {
		if rt := v.Runtime(); rt.State != vm.Halted && rt.MemoryMiB > 0 {
			return strconv.Itoa(rt.MemoryMiB)
		}
		return ""
	}, "Memory currently used by VM", false},
	"DISK":      {func(_ *vm.View, d diskUsage) string { return mib(d.total()) }, "Total disk utilisation.", false},
	"PRIV-CURR": {func(_ *vm.View, d diskUsage) string { return mib(d["private"].usage) }, "Disk utilisation by private image (/home, /usr/local).", false},
	"PRIV-MAX":  {func(_ *vm.View, d diskUsage) string { return mib(d["private"].size) }, "Maximum available space for private image.", false},
	"PRIV-POOL": {func(v *vm.View, _ diskUsage) string { return volumePool(v, volume.Private) }, "Storage pool of private volume.", false},
	"PRIV-USED": {func(_ *vm.View, d diskUsage) string { return percent(d["private"]) }, "Disk utilisation by private image as a percentage of available space.", false},
	"ROOT-CURR": {func(_ *vm.View, d diskUsage) string { return mib(d["root"].usage) }, "Disk utilisation by root image (/usr, /lib, /etc, ...).", false},
	"ROOT-MAX":  {func(_ *vm.View, d diskUsage) string { return mib(d["root"].size) }, "Maximum available space for root image.", false},
	"ROOT-POOL": {func(v *vm.View, _ diskUsage) string { return volumePool(v, volume.Root) }, "Storage pool of root volume.", false},
	"ROOT-USED": {func(_ *vm.View, d diskUsage) string { return percent(d["root"]) }, "Disk utilisation by root image as a percentage of available space.", false},
	"FLAGS": {func(v *vm.View, _ diskUsage) string { return flags(v) },
		"Various flags: type, power state, updateable, provides_network, installed_by_rpm, internal, debug, autostart.", false},
	"IPBACK":     {func(v *vm.View, _ diskUsage) string { return v.Str("gateway") }, "(qvm, from R3) The gateway a netvm is for its clients.", true},
	"INITIALMEM": {func(v *vm.View, _ diskUsage) string { return v.Str("memory") }, "(qvm, from R3) Initial memory, the memory property.", true},
}

// lsNumeric are the columns --sort orders by number (Qubes' list).
var lsNumeric = map[string]bool{"MEMORY": true, "DISK": true, "PRIV-CURR": true, "PRIV-MAX": true, "ROOT-CURR": true, "XID": true,
	"ROOT-MAX": true, "MAXMEM": true, "QREXEC-TIMEOUT": true, "SHUTDOWN-TIMEOUT": true, "VCPUS": true, "PRIV-USED": true, "ROOT-USED": true}

// lsOptions are qvm-ls' options.
type lsOptions struct {
	format, fields, sortBy, internal, servicevm          string
	tree, rawData, rawList, reverse, ignoreCase, pending bool
	network, disk, kernel, helpFormats, helpColumns      bool
	running, paused, halted                              bool
	classes, labels, tags, excludeTags, templates        []string
	netvms, features, prefs                              []string
}

// runLs is qvm-ls: list VMs as a table, raw rows or JSON.
func runLs(ctx context.Context, a *app, args []string) error {
	c := a.newCmdline(ctx, "[options] [--all [--exclude EXCLUDE]] [VMNAME...]")
	var o lsOptions
	sel := c.selection("")
	c.StringVarP(&o.format, "format", "o", "simple", "preset format: "+strings.Join(lsFormatNames, ", ")+" (json: qvm's, for scripts)")
	c.StringVarP(&o.fields, "fields", "O", "", "user specified format (see available columns: --help-columns)")
	c.BoolVarP(&o.tree, "tree", "t", false, "sort domain list as network tree")
	c.BoolVar(&o.rawData, "raw-data", false, "Display the specified data of the VMs. Intended for bash-parsing.")
	c.BoolVar(&o.rawList, "raw-list", false, "Same as --raw-data --fields=name")
	c.BoolVarP(&o.disk, "disk", "d", false, "Same as --format=disk")
	c.BoolVarP(&o.network, "network", "n", false, "Same as --format=network")
	c.BoolVarP(&o.kernel, "kernel", "k", false, "Same as --format=kernel")
	c.BoolVar(&o.helpFormats, "help-formats", false, "list all available formats with their definitions and exit")
	c.BoolVar(&o.helpColumns, "help-columns", false, "list all available columns with short descriptions and exit")
	c.multi(&o.classes, "class", "", "show only qubes of specific class(es)")
	c.multi(&o.labels, "label", "", "show only qubes with specific label(s)")
	c.multi(&o.tags, "tags", "", "show only qubes having specific tag(s)")
	c.multi(&o.excludeTags, "exclude-tags", "", "exclude qubes having specific tag(s)")
	c.BoolVar(&o.running, "running", false, "show running VMs")
	c.BoolVar(&o.paused, "paused", false, "show paused VMs")
	c.BoolVar(&o.halted, "halted", false, "show halted VMs")
	c.multi(&o.templates, "template-source", "", `filter results to the qubes based on the TEMPLATE. "" means None`)
	c.multi(&o.netvms, "netvm-is", "", `filter results to the qubes connecting via NETVM ("" means none)`)
	c.StringVar(&o.internal, "internal", "both", "show only internal qubes (y) or hide them (n)")
	c.StringVar(&o.servicevm, "servicevm", "both", "show only ServiceVMs (y) or hide them (n)")
	c.BoolVar(&o.pending, "pending-update", false, "filter results to qubes pending for update")
	c.multi(&o.features, "features", "", "filter results to qubes that match all specified features (FEATURE=VALUE); omitted VALUE means unset, '' means blank")
	c.multi(&o.prefs, "prefs", "", "filter results to qubes that match all specified preferences (PREFERENCE=VALUE); omitted VALUE means unset, '' means blank")
	c.StringVar(&o.sortBy, "sort", "NAME", "sort based on provided column rather than NAME")
	c.BoolVar(&o.reverse, "reverse", false, "reverse sort")
	c.BoolVar(&o.ignoreCase, "ignore-case", false, "ignore case distinctions when sorting")
	c.Bool("spinner", false, "reenable spinner (qvm shows none)")
	c.Bool("no-spinner", false, "disable spinner")
	c.exclude("format", "fields", "disk", "network", "kernel")
	for flag, m := range map[string]string{"fields": "FIELD,...", "sort": "COLUMN", "class": "CLASS", "label": "LABEL", "tags": "TAG",
		"exclude-tags": "TAG", "template-source": "TEMPLATE", "netvm-is": "NETVM", "internal": "<y|n>", "servicevm": "<y|n>",
		"features": "FEATURE=VALUE", "prefs": "PREFERENCE=VALUE"} {
		c.metavar(flag, m)
	}
	if err := c.parse(args); err != nil {
		return err
	}
	if o.helpFormats {
		printLsFormats(a.stdout)
		return nil
	}
	if o.helpColumns {
		printLsColumns(a.stdout)
		return nil
	}
	if err := o.check(); err != nil {
		return err
	}
	st, sys, err := c.session().load()
	if err != nil {
		return err
	}
	names, err := sel.resolve(sys, c.Args(), false, true)
	if err != nil {
		return err
	}
	if len(names) == 0 && !sel.all && len(c.Args()) == 0 {
		names = sys.Names()
	}
	views := make([]*vm.View, 0, len(names))
	for _, n := range names {
		v, err := sys.View(n)
		if err != nil {
			return err
		}
		views = append(views, v)
	}
	if views, err = o.filter(views); err != nil {
		return err
	}
	sort.SliceStable(views, func(i, j int) bool { return views[i].Name() < views[j].Name() })
	if o.rawList {
		o.rawData, o.fields = true, "name"
	}
	if o.format == "json" && o.fields == "" {
		return writeJSON(a.stdout, views)
	}
	cols := lsFormats[o.format]
	if o.fields != "" {
		cols = nil
		for _, f := range strings.Split(o.fields, ",") {
			cols = append(cols, strings.TrimSpace(f))
		}
	}
	heads := make([]string, len(cols))
	needDisk := false
	for i, col := range cols {
		heads[i] = strings.ToUpper(strings.ReplaceAll(col, "_", "-"))
		needDisk = needDisk || heads[i] == "DISK" || strings.HasPrefix(heads[i], "PRIV-") || strings.HasPrefix(heads[i], "ROOT-")
	}
	row := func(v *vm.View, depth int) []string {
		var du diskUsage
		if needDisk {
			du = diskUsageOf(st, v)
		}
		r := make([]string, len(heads))
		for i, h := range heads {
			r[i] = cell(v, h, du)
			if h == "NAME" && depth > 0 {
				r[i] = strings.Repeat("  ", depth-1) + "└─" + r[i]
			}
		}
		return r
	}
	if o.rawData {
		var b strings.Builder
		for _, v := range views {
			b.WriteString(strings.Join(row(v, 0), "|"))
			b.WriteByte('\n')
		}
		io.WriteString(a.stdout, b.String())
		return nil
	}
	rows := [][]string{heads}
	if o.tree {
		for _, n := range networkTree(views) {
			rows = append(rows, row(n.v, n.depth))
		}
	} else {
		for _, v := range views {
			rows = append(rows, row(v, 0))
		}
		o.sortRows(heads, rows[1:])
	}
	writeTable(a.stdout, rows)
	return nil
}

// check refuses option values argparse would.
func (o *lsOptions) check() error {
	if o.network {
		o.format = "network"
	}
	if o.disk {
		o.format = "disk"
	}
	if o.kernel {
		o.format = "kernel"
	}
	if _, ok := lsFormats[o.format]; !ok && o.format != "json" {
		return usagef("argument --format/-o: invalid choice: %s (choose from %s)", pyRepr(o.format), quotedList(lsFormatNames))
	}
	for name, val := range map[string]string{"--internal": o.internal, "--servicevm": o.servicevm} {
		switch val {
		case "both", "y", "yes", "n", "no":
		default:
			return usagef("argument %s: invalid choice: %s (choose from 'y', 'yes', 'n', 'no')", name, pyRepr(val))
		}
	}
	for _, list := range []struct {
		opt  string
		vals []string
	}{{"--features", o.features}, {"--prefs", o.prefs}} {
		for _, f := range list.vals {
			if k, _, ok := strings.Cut(f, "="); !ok || k == "" {
				return usagef("Invalid argument: %s %s", list.opt, f)
			}
		}
	}
	return nil
}

func quotedList(names []string) string {
	q := make([]string, len(names))
	for i, n := range names {
		q[i] = pyRepr(n)
	}
	return strings.Join(q, ", ")
}

// filter applies the filtering options, in Qubes' order.
func (o *lsOptions) filter(views []*vm.View) ([]*vm.View, error) {
	keep := func(f func(v *vm.View) bool) {
		out := views[:0:0]
		for _, v := range views {
			if f(v) {
				out = append(out, v)
			}
		}
		views = out
	}
	in := func(list []string, s string) bool {
		for _, x := range list {
			if x == s {
				return true
			}
		}
		return false
	}
	if len(o.classes) > 0 {
		keep(func(v *vm.View) bool { return in(o.classes, string(v.Class())) })
	}
	if len(o.labels) > 0 {
		keep(func(v *vm.View) bool { return in(o.labels, v.Str("label")) })
	}
	if len(o.tags) > 0 {
		keep(func(v *vm.View) bool {
			for _, t := range o.tags {
				if v.Def().HasTag(t) {
					return true
				}
			}
			return false
		})
	}
	if len(o.excludeTags) > 0 {
		keep(func(v *vm.View) bool {
			for _, t := range o.excludeTags {
				if v.Def().HasTag(t) {
					return false
				}
			}
			return true
		})
	}
	if len(o.templates) > 0 {
		keep(func(v *vm.View) bool {
			t := ""
			if tv := v.Template(); tv != nil {
				t = tv.Name()
			}
			return in(o.templates, t)
		})
	}
	if len(o.netvms) > 0 {
		keep(func(v *vm.View) bool { return in(o.netvms, v.Str("netvm")) })
	}
	featureTrue := func(v *vm.View, name string) bool {
		val, _ := v.Feature(name)
		return val == "1" || val == "true" || val == "True"
	}
	for opt, name := range map[*string]string{&o.internal: "internal", &o.servicevm: "servicevm"} {
		switch *opt {
		case "y", "yes":
			keep(func(v *vm.View) bool { return featureTrue(v, name) })
		case "n", "no":
			keep(func(v *vm.View) bool { return !featureTrue(v, name) })
		}
	}
	if o.pending {
		keep(func(v *vm.View) bool { val, _ := v.Feature("updates-available"); return val != "" })
	}
	for _, f := range o.features {
		key, want, unset := filterValue(f)
		keep(func(v *vm.View) bool {
			val, ok := v.Feature(key)
			if unset {
				return !ok
			}
			return ok && val == want
		})
	}
	for _, p := range o.prefs {
		key, want, unset := filterValue(p)
		key = strings.ReplaceAll(key, "-", "_")
		keep(func(v *vm.View) bool {
			// A property the VM lacks reads as None, as getattr's
			// default does in Qubes; an unset one is what VALUE '' asks.
			val, err := v.Get(key)
			if err != nil {
				return !unset && want == "None"
			}
			if val.Mark == vm.MarkUnset {
				return unset || want == "None"
			}
			return !unset && val.String() == want
		})
	}
	if o.running || o.paused || o.halted {
		keep(func(v *vm.View) bool {
			st := v.Runtime().State
			return o.running && st == vm.Running || o.paused && st == vm.Paused || o.halted && st == vm.Halted
		})
	}
	return views, nil
}

// filterValue reads KEY=VALUE of --features and --prefs: an empty VALUE
// means unset, ” or "" an empty value.
func filterValue(s string) (key, want string, unset bool) {
	key, want, _ = strings.Cut(s, "=")
	switch want {
	case "":
		return key, "", true
	case "''", `""`:
		return key, "", false
	}
	return key, want, false
}

// sortRows orders the rows by the --sort column when the output has it:
// by number for the numeric columns (a value that is none sorts as 0), else
// by text (upper-cased with --ignore-case); stable.
func (o *lsOptions) sortRows(heads []string, rows [][]string) {
	col := -1
	key := strings.ToUpper(o.sortBy)
	for i, h := range heads {
		if h == key {
			col = i
			break
		}
	}
	if col < 0 {
		return
	}
	less := func(a, b string) bool {
		if o.ignoreCase {
			a, b = strings.ToUpper(a), strings.ToUpper(b)
		}
		return a < b
	}
	if lsNumeric[key] {
		num := func(s string) int {
			n, err := strconv.Atoi(strings.TrimSuffix(s, "%"))
			if err != nil {
				return 0
			}
			return n
		}
		less = func(a, b string) bool { return num(a) < num(b) }
	}
	sort.SliceStable(rows, func(i, j int) bool {
		if o.reverse {
			return less(rows[j][col], rows[i][col])
		}
		return less(rows[i][col], rows[j][col])
	})
}

// treeNode is a VM in the network tree, at its depth.
type treeNode struct {
	v     *vm.View
	depth int
}

// networkTree orders VMs as --tree shows them: first the VMs without
// network that provide none, then each network provider without a netvm
// (qvm: dom0 is one) followed by the VMs connected to it, recursively.
// VMs whose netvm is not listed are left out, as in Qubes.
func networkTree(views []*vm.View) []treeNode {
	listed := map[string]bool{}
	for _, v := range views {
		listed[v.Name()] = true
	}
	var tree []treeNode
	var children func(parent string, depth int)
	children = func(parent string, depth int) {
		for _, v := range views {
			if v.Name() != parent && v.Str("netvm") == parent && v.Class() != vm.AdminVM {
				tree = append(tree, treeNode{v, depth})
				if v.ProvidesNetwork() {
					children(v.Name(), depth+1)
				}
			}
		}
	}
	for _, v := range views {
		if v.Str("netvm") == "" && !v.ProvidesNetwork() {
			tree = append(tree, treeNode{v, 0})
		}
	}
	for _, v := range views {
		if v.Str("netvm") == "" && v.ProvidesNetwork() {
			tree = append(tree, treeNode{v, 0})
			children(v.Name(), 1)
		}
	}
	return tree
}

func printLsFormats(w io.Writer) {
	names := make([]string, 0, len(lsFormats))
	width := 0
	for n := range lsFormats {
		names = append(names, n)
		width = max(width, len(n))
	}
	sort.Strings(names)
	var b strings.Builder
	b.WriteString("Available formats:\n")
	for _, n := range names {
		fmt.Fprintf(&b, "  %-*s  %s\n", width, n, strings.ToUpper(strings.Join(lsFormats[n], ",")))
	}
	fmt.Fprintf(&b, "  %-*s  (qvm) every property and the state of each VM, as a JSON array\n\n", width, "json")
	io.WriteString(w, b.String())
}

func printLsColumns(w io.Writer) {
	heads := make([]string, 0, len(lsColumns))
	width := 0
	for h, col := range lsColumns {
		if !col.hidden {
			heads = append(heads, h)
			width = max(width, len(h))
		}
	}
	sort.Strings(heads)
	var b strings.Builder
	b.WriteString("Available columns:\n")
	for _, h := range heads {
		b.WriteString(wrapText(fmt.Sprintf("%-*s  %s", width, h, lsColumns[h].doc), 80, "  ", strings.Repeat(" ", width+6)))
		b.WriteByte('\n')
	}
	b.WriteString("\nAdditionally any VM property may be used as a column, see qvm-prefs --help-properties for available values\n\n")
	io.WriteString(w, b.String())
}

// cell is one table cell: a column of qvm-ls' own or a property (any
// name: one the VM lacks is empty); "-" when empty.
func cell(v *vm.View, head string, du diskUsage) string {
	var s string
	if col, ok := lsColumns[head]; ok {
		s = col.cell(v, du)
	} else {
		switch name := strings.ToLower(strings.ReplaceAll(head, "-", "_")); name {
		case "template":
			if t := v.Template(); t != nil {
				s = t.Name()
			}
		default:
			if val, err := v.Get(name); err == nil && val.Mark != vm.MarkUnset {
				s = val.Text
			}
		}
	}
	if s == "" {
		return "-"
	}
	return s
}

// volumePool is the pool of a VM's volume ("" when it has none).
func volumePool(v *vm.View, name string) string {
	specs, _ := volume.Layout(string(v.Class()))
	for _, s := range specs {
		if s.Name == name {
			return volume.FilePool
		}
	}
	return ""
}

// flags is the FLAGS column: class (capital for HVM), power, then U N R i D A.
func flags(v *vm.View) string {
	codes := map[vm.Class]string{vm.AdminVM: "0", vm.TemplateVM: "t", vm.AppVM: "a", vm.StandaloneVM: "s", vm.DispVM: "d"}
	t := codes[v.Class()]
	if t != "0" && v.VirtMode() == vm.HVM {
		t = strings.ToUpper(t)
	}
	p := "-"
	if st := v.Runtime().State; st != vm.Halted {
		p = st.Lower()[:1]
	}
	f := func(b bool, c string) string {
		if b {
			return c
		}
		return "-"
	}
	return t + p + f(v.Bool("updateable"), "U") + f(v.Bool("provides_network"), "N") +
		f(v.Bool("installed_by_rpm"), "R") + "-" + f(v.Bool("debug"), "D") + f(v.Bool("autostart"), "A")
}

// writeJSON prints each VM's state and every property, typed.
func writeJSON(w io.Writer, views []*vm.View) error {
	out := make([]map[string]any, 0, len(views))
	for _, v := range views {
		rt := v.Runtime()
		m := map[string]any{"state": string(rt.State)}
		props := map[string]any{}
		marks := map[string]string{}
		for _, n := range v.PropertyNames() {
			val, _ := v.Get(n)
			marks[n] = string(val.Mark)
			props[n] = jsonValue(val)
		}
		m["name"] = v.Name()
		m["class"] = string(v.Class())
		m["properties"] = props
		m["marks"] = marks
		tmpl := ""
		if t := v.Template(); t != nil {
			tmpl = t.Name()
		}
		m["template"] = nullable(tmpl)
		m["netvm"] = nullable(v.Str("netvm"))
		m["ip"] = nullable(v.Str("ip"))
		m["gateway"] = nullable(v.Str("visible_gateway"))
		tags := v.Def().Tags
		if tags == nil {
			tags = []string{}
		}
		m["tags"] = tags
		out = append(out, m)
	}
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	return enc.Encode(out)
}

func nullable(s string) any {
	if s == "" {
		return nil
	}
	return s
}

func jsonValue(val vm.Value) any {
	if val.Mark == vm.MarkUnset {
		return nil
	}
	switch val.Kind {
	case vm.KindInt:
		if n, err := strconv.Atoi(val.Text); err == nil {
			return n
		}
	case vm.KindBool:
		return val.Text == "True"
	case vm.KindVM:
		return nullable(val.Text)
	}
	return val.Text
}

// diskUsage is size and usage per volume, in bytes.
type diskUsage map[string]struct{ size, usage int64 }

func (d diskUsage) total() int64 {
	var t int64
	for _, u := range d {
		t += u.usage
	}
	return t
}

func mib(n int64) string { return strconv.FormatInt(n>>20, 10) }

// percent is Qubes' *-USED: whole MiB used per MiB of size, as N%; 0
// without a size.
func percent(u struct{ size, usage int64 }) string {
	size := u.size >> 20
	if size == 0 {
		return "0"
	}
	return strconv.FormatInt((u.usage>>20)*100/size, 10) + "%"
}

// diskUsageOf reads the size and allocated bytes of a VM's volumes, as
// qvm-volume info reports them (a snapshot volume has its source's size
// and no usage of its own).
func diskUsageOf(st *store.Store, v *vm.View) diskUsage {
	du := diskUsage{}
	infos, _ := volume.DescribeAll(volumeVM(st, v))
	for _, in := range infos {
		if in.Name != volume.Kernel {
			du[in.Name] = struct{ size, usage int64 }{in.Size, in.Usage}
		}
	}
	return du
}
