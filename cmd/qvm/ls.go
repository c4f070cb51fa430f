package main

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"sort"
	"strconv"
	"strings"

	"github.com/qvm-project/qvm/vm"
)

// lsFormats are qvm-ls' preset column sets (json is qvm's own, for scripts).
var lsFormats = map[string][]string{
	"simple":  {"name", "state", "class", "label", "template", "netvm"},
	"network": {"name", "state", "netvm", "ip", "ipback", "gateway"},
	"kernel":  {"name", "state", "class", "template", "kernel", "kernelopts"},
	"full":    {"name", "state", "class", "label", "qid", "xid", "uuid"},
	"disk":    {"name", "state", "disk", "priv-curr", "priv-max", "priv-used", "root-curr", "root-max", "root-used"},
}

// lsColumn computes one cell; "" prints as "-".
type lsColumn func(v *vm.View, disk diskUsage) string

// lsColumns are the columns beyond plain properties.
var lsColumns = map[string]lsColumn{
	"STATE":  func(v *vm.View, _ diskUsage) string { return v.Runtime().State },
	"CLASS":  func(v *vm.View, _ diskUsage) string { return string(v.Class()) },
	"IPBACK": func(v *vm.View, _ diskUsage) string { return v.Str("gateway") },
	"GATEWAY": func(v *vm.View, _ diskUsage) string {
		return v.Str("visible_gateway")
	},
	"TEMPLATE": func(v *vm.View, _ diskUsage) string {
		if t := v.Template(); t != nil {
			return t.Name()
		}
		return ""
	},
	"DISK":      func(_ *vm.View, d diskUsage) string { return mib(d.total()) },
	"PRIV-CURR": func(_ *vm.View, d diskUsage) string { return mib(d["private"].usage) },
	"PRIV-MAX":  func(_ *vm.View, d diskUsage) string { return mib(d["private"].size) },
	"PRIV-USED": func(_ *vm.View, d diskUsage) string { return percent(d["private"]) },
	"ROOT-CURR": func(_ *vm.View, d diskUsage) string { return mib(d["root"].usage) },
	"ROOT-MAX":  func(_ *vm.View, d diskUsage) string { return mib(d["root"].size) },
	"ROOT-USED": func(_ *vm.View, d diskUsage) string { return percent(d["root"]) },
	"FLAGS":     func(v *vm.View, _ diskUsage) string { return flags(v) },
}

// runLs is qvm-ls: list VMs as a table, raw rows or JSON.
func runLs(ctx context.Context, a *app, args []string) error {
	c := a.newCmdline(ctx, "[options] [VMNAME...]")
	var (
		format, fields                           string
		network, disk, rawData, rawList, all     bool
		running, paused, halted, spinner, nospin bool
		exclude                                  []string
		helpFormats, helpColumns                 bool
	)
	c.StringVarP(&format, "format", "o", "simple", "preset format: simple, network, kernel, full, disk, json")
	c.StringVarP(&fields, "fields", "O", "", "columns to show, comma separated (see --help-columns)")
	c.BoolVarP(&network, "network", "n", false, "same as --format network")
	c.BoolVarP(&disk, "disk", "d", false, "same as --format disk")
	c.BoolVar(&rawData, "raw-data", false, "rows as |-separated values, no header (for scripts)")
	c.BoolVar(&rawList, "raw-list", false, "only the names, one per line")
	c.BoolVar(&all, "all", false, "all VMs (the default when no VMNAME is given)")
	c.StringArrayVar(&exclude, "exclude", nil, "leave out this VM (repeatable)")
	c.BoolVar(&running, "running", false, "only running VMs")
	c.BoolVar(&paused, "paused", false, "only paused VMs")
	c.BoolVar(&halted, "halted", false, "only halted VMs")
	c.BoolVar(&spinner, "spinner", false, "ignored")
	c.BoolVar(&nospin, "no-spinner", false, "ignored")
	c.BoolVar(&helpFormats, "help-formats", false, "list the formats and exit")
	c.BoolVar(&helpColumns, "help-columns", false, "list the columns and exit")
	if err := c.parse(args); err != nil {
		return err
	}
	if helpFormats {
		names := make([]string, 0, len(lsFormats))
		for n := range lsFormats {
			names = append(names, n)
		}
		sort.Strings(names)
		for _, n := range names {
			fmt.Fprintf(a.stdout, "  %-7s  %s\n", n, strings.ToUpper(strings.Join(lsFormats[n], ",")))
		}
		fmt.Fprintf(a.stdout, "  %-7s  every property and the state, as a JSON array\n", "json")
		return nil
	}
	if helpColumns {
		var names []string
		for n := range lsColumns {
			names = append(names, n)
		}
		for _, d := range vm.PropertyDocs(vm.StandaloneVM) {
			names = append(names, strings.ToUpper(strings.ReplaceAll(d.Name, "_", "-")))
		}
		sort.Strings(names)
		fmt.Fprintln(a.stdout, strings.Join(dedupe(names), "\n"))
		return nil
	}
	if network {
		format = "network"
	}
	if disk {
		format = "disk"
	}
	st, sys, err := c.loadSystem()
	if err != nil {
		return err
	}
	views, err := selectVMs(sys, c.Args(), exclude, running, paused, halted)
	if err != nil {
		return err
	}
	if rawList {
		for _, v := range views {
			fmt.Fprintln(a.stdout, v.Name())
		}
		return nil
	}
	if format == "json" && fields == "" {
		return writeJSON(a.stdout, views)
	}
	cols := lsFormats[format]
	if fields != "" {
		cols = strings.Split(fields, ",")
	} else if cols == nil {
		return usagef("unknown format %q: use simple, network, kernel, full, disk or json", format)
	}
	heads := make([]string, len(cols))
	for i, col := range cols {
		heads[i] = strings.ToUpper(strings.ReplaceAll(strings.TrimSpace(col), "_", "-"))
		if _, ok := lsColumns[heads[i]]; !ok && !isPropertyColumn(heads[i]) {
			return usagef("unknown column %q (see --help-columns)", col)
		}
	}
	rows := make([][]string, 0, len(views)+1)
	if !rawData {
		rows = append(rows, heads)
	}
	needDisk := strings.Contains(strings.Join(heads, ","), "DISK") || strings.Contains(strings.Join(heads, ","), "PRIV") || strings.Contains(strings.Join(heads, ","), "ROOT")
	for _, v := range views {
		var du diskUsage
		if needDisk {
			du = diskUsageOf(st, v)
		}
		row := make([]string, len(heads))
		for i, h := range heads {
			row[i] = cell(v, h, du)
		}
		rows = append(rows, row)
	}
	if rawData {
		var b strings.Builder
		for _, r := range rows {
			b.WriteString(strings.Join(r, "|"))
			b.WriteByte('\n')
		}
		io.WriteString(a.stdout, b.String())
		return nil
	}
	writeTable(a.stdout, rows)
	return nil
}

func dedupe(s []string) []string {
	out := s[:0]
	for i, x := range s {
		if i == 0 || x != s[i-1] {
			out = append(out, x)
		}
	}
	return out
}

func isPropertyColumn(head string) bool {
	name := strings.ToLower(strings.ReplaceAll(head, "-", "_"))
	for _, cl := range []vm.Class{vm.AdminVM, vm.AppVM, vm.StandaloneVM, vm.TemplateVM, vm.DispVM} {
		if _, ok := vm.PropertyKind(cl, name); ok {
			return true
		}
	}
	return false
}

// cell is one table cell: a special column or a property; "-" when empty.
func cell(v *vm.View, head string, du diskUsage) string {
	var s string
	if f, ok := lsColumns[head]; ok {
		s = f(v, du)
	} else {
		val, err := v.Get(strings.ToLower(strings.ReplaceAll(head, "-", "_")))
		if err == nil {
			s = val.Text
		}
	}
	if s == "" {
		return "-"
	}
	return s
}

// selectVMs picks the VMs to list, sorted by name.
func selectVMs(sys *vm.System, names, exclude []string, running, paused, halted bool) ([]*vm.View, error) {
	if len(names) == 0 {
		names = sys.Names()
	}
	skip := map[string]bool{}
	for _, e := range exclude {
		skip[e] = true
	}
	sort.Strings(names)
	var views []*vm.View
	for _, n := range names {
		if skip[n] {
			continue
		}
		v, err := sys.View(n)
		if err != nil {
			return nil, err
		}
		if running || paused || halted {
			st := v.Runtime().State
			if !(running && st == "Running" || paused && st == "Paused" || halted && st == "Halted") {
				continue
			}
		}
		views = append(views, v)
	}
	return views, nil
}

// writeTable aligns columns like `column -t`: each padded to its widest
// cell, two spaces apart, the last one not padded.
func writeTable(w io.Writer, rows [][]string) {
	if len(rows) == 0 {
		return
	}
	widths := make([]int, len(rows[0]))
	for _, r := range rows {
		for i, c := range r {
			widths[i] = max(widths[i], len(c))
		}
	}
	var b strings.Builder
	for _, r := range rows {
		for i, c := range r {
			if i == len(r)-1 {
				b.WriteString(c)
			} else {
				b.WriteString(c)
				b.WriteString(strings.Repeat(" ", widths[i]-len(c)+2))
			}
		}
		b.WriteByte('\n')
	}
	io.WriteString(w, b.String())
}

// flags is the FLAGS column: class (capital for HVM), power, then U N R i D A.
func flags(v *vm.View) string {
	codes := map[vm.Class]string{vm.AdminVM: "0", vm.TemplateVM: "t", vm.AppVM: "a", vm.StandaloneVM: "s", vm.DispVM: "d"}
	t := codes[v.Class()]
	if t != "0" && v.Str("virt_mode") == "hvm" {
		t = strings.ToUpper(t)
	}
	p := "-"
	switch st := strings.ToLower(v.Runtime().State); st {
	case "running", "transient", "paused", "suspended", "halting", "dying", "crashed":
		p = st[:1]
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
		m := map[string]any{"state": rt.State}
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

func percent(u struct{ size, usage int64 }) string {
	if u.size == 0 {
		return "0"
	}
	return strconv.FormatInt(u.usage*100/u.size, 10)
}
