package main

import (
	"context"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"sort"
	"strings"

	"github.com/spf13/pflag"

	"github.com/qvm-project/qvm/store"
	"github.com/qvm-project/qvm/vm"
)

// Shell completion: the script (qvm --completion bash) hands the command
// line up to the cursor to `qvm --complete bash BREAKS LINE`, which
// answers from the verbs' own flag definitions (see describe) and, for VM
// names, properties and the like, from the store document alone (no lock,
// no hypervisor): one line saying what the shell should do besides ("-",
// "nospace", "files" or "dirs"), then the candidates, one per line.

// bashCompletion is the completion script for qvm and every qvm-* command.
func bashCompletion(w io.Writer) {
	var names []string
	for _, v := range verbs() {
		if !v.hidden {
			names = append(names, v.linkName())
		}
	}
	fmt.Fprintf(w, `# bash completion for qvm and its commands (qvm --completion bash).
# The candidates come from qvm itself: qvm --complete bash BREAKS LINE.
_qvm() {
    local cur=${COMP_WORDS[COMP_CWORD]} bin directive
    local -a out
    bin=$(type -P -- "${COMP_WORDS[0]}") && bin=$(readlink -f -- "$bin") || bin=qvm
    mapfile -t out < <("$bin" --complete bash "$COMP_WORDBREAKS" "${COMP_LINE:0:COMP_POINT}" 2>/dev/null)
    directive=${out[0]}
    COMPREPLY=("${out[@]:1}")
    case $directive in
    nospace)
        compopt -o nospace 2>/dev/null || : ;;
    files|dirs)
        local d=
        [[ $directive == dirs ]] && d=-d
        if declare -F _filedir >/dev/null; then
            _filedir $d
        else
            compopt -o filenames 2>/dev/null || :
            mapfile -t COMPREPLY < <(compgen ${d:--f} -- "$cur")
        fi ;;
    esac
}
complete -F _qvm qvm %s
`, strings.Join(names, " "))
}

// completion directives: what the shell does besides the candidates.
const (
	compNone    = "-"
	compNoSpace = "nospace"
	compFiles   = "files"
	compDirs    = "dirs"
)

// runComplete answers one completion request.
func runComplete(ctx context.Context, w io.Writer, getenv func(string) string, breaks, line string) {
	words, cur := shellWords(line)
	directive, cands := completeWords(ctx, getenv, words, cur)
	// Readline replaces only the text after the last word-break character
	// (':' and '=' among them); each candidate loses what comes before.
	cut := 0
	if i := strings.LastIndexAny(cur, breaks); i >= 0 && breaks != "" {
		cut = i + 1
	}
	fmt.Fprintln(w, directive)
	seen := map[string]bool{}
	for _, c := range cands {
		if !strings.HasPrefix(c, cur) || seen[c] {
			continue
		}
		seen[c] = true
		fmt.Fprintln(w, c[cut:])
	}
}

// shellWords splits a command line as the shell would (quotes and
// backslashes), returning the complete words and the word being typed.
func shellWords(line string) (words []string, cur string) {
	var b strings.Builder
	inWord := false
	quote := byte(0)
	for i := 0; i < len(line); i++ {
		c := line[i]
		switch {
		case quote != 0 && c == quote:
			quote = 0
		case quote == '\'':
			b.WriteByte(c)
		case c == '\\' && i+1 < len(line):
			i++
			b.WriteByte(line[i])
			inWord = true
		case quote == '"':
			b.WriteByte(c)
		case c == '\'' || c == '"':
			quote, inWord = c, true
		case c == ' ' || c == '\t' || c == '\n':
			if inWord {
				words = append(words, b.String())
				b.Reset()
				inWord = false
			}
		default:
			b.WriteByte(c)
			inWord = true
		}
	}
	return words, b.String()
}

// completeWords finds the candidates for cur after words.
func completeWords(ctx context.Context, getenv func(string) string, words []string, cur string) (string, []string) {
	if len(words) == 0 {
		return compNone, nil
	}
	name := filepath.Base(words[0])
	args := words[1:]
	var v *verb
	for _, x := range verbs() {
		if x.linkName() == name || x.link != "" && filepath.Base(x.link) == name {
			v = &x
		}
	}
	if v == nil {
		if len(args) == 0 {
			var out []string
			for _, x := range verbs() {
				if !x.hidden {
					out = append(out, x.name)
				}
			}
			sort.Strings(out)
			return compNone, append(out, "--help", "--list-verbs", "--completion", "--man")
		}
		for _, x := range verbs() {
			if x.name == args[0] {
				v = &x
			}
		}
		args = args[1:]
	}
	if v == nil || v.hidden {
		return compNone, nil
	}
	d := describe(ctx, *v)
	if d == nil {
		return compNone, nil
	}
	cc := &completer{ctx: ctx, getenv: getenv, verb: v.name}
	if d.actions != nil {
		i := actionIndex(args)
		if i < 0 {
			if strings.HasPrefix(cur, "-") {
				return compNone, []string{"--dir", "--help", "-h"}
			}
			var out []string
			for _, a := range d.actions {
				out = append(out, a.names[0])
			}
			return compNone, out
		}
		ad := d.action(args[i])
		if ad == nil {
			return compNone, nil
		}
		cc.action = ad.names[0]
		d = ad.desc
		args = append(append([]string(nil), args[:i]...), args[i+1:]...)
	}
	return cc.complete(d.cmd, args, cur)
}

// actionIndex finds the action among args: the first word that is not an
// option (or the value of --dir); -1 when there is none yet.
func actionIndex(args []string) int {
	for i := 0; i < len(args); i++ {
		switch a := args[i]; {
		case a == "--dir":
			i++
		case strings.HasPrefix(a, "-"):
		default:
			return i
		}
	}
	return -1
}

// completer knows the verb being completed and reads the store for names.
type completer struct {
	ctx    context.Context
	getenv func(string) string
	verb   string
	action string
	dir    string
	sys    *vm.System
	st     *store.Store
	loaded bool
}

// complete completes cur after args on a verb's command line.
func (cc *completer) complete(c *cmdline, args []string, cur string) (string, []string) {
	var positionals []string
	var pending *pflag.Flag // a flag whose value cur (or the next word) is
	var greedy *pflag.Flag
	afterDashes := false
	for i := 0; i < len(args); i++ {
		a := args[i]
		if pending != nil {
			if pending.Name == "dir" {
				cc.dir = a
			}
			pending = nil
			continue
		}
		switch {
		case afterDashes || a == "-" || !strings.HasPrefix(a, "-"):
			if greedy != nil && !afterDashes {
				continue
			}
			positionals = append(positionals, a)
		case a == "--":
			afterDashes = true
		case strings.HasPrefix(a, "--"):
			name, val, hasVal := strings.Cut(a[2:], "=")
			f := c.Lookup(name)
			if full, err := c.longName(name); f == nil && err == nil {
				f = c.Lookup(full)
			}
			greedy = nil
			if f == nil {
				continue
			}
			if f.Name == "dir" && hasVal {
				cc.dir = val
			}
			if c.greedy[f.Name] && !hasVal {
				greedy = f
			} else if !hasVal && f.NoOptDefVal == "" {
				pending = f
			}
		default:
			greedy = nil
			// Short options, possibly run together: the last may take
			// the rest of the word or the next one.
			for j := 1; j < len(a); j++ {
				f := c.ShorthandLookup(a[j : j+1])
				if f == nil {
					break
				}
				if f.NoOptDefVal == "" {
					if j == len(a)-1 {
						pending = f
					}
					break
				}
			}
		}
	}
	switch {
	case pending != nil:
		return cc.flagValue(pending, "", cur, positionals)
	case !afterDashes && strings.HasPrefix(cur, "--") && strings.Contains(cur, "="):
		name, _, _ := strings.Cut(cur[2:], "=")
		if f := c.Lookup(name); f != nil {
			return cc.flagValue(f, "--"+name+"=", strings.TrimPrefix(cur, "--"+name+"="), positionals)
		}
		return compNone, nil
	case !afterDashes && strings.HasPrefix(cur, "-"):
		var out []string
		c.VisitAll(func(f *pflag.Flag) {
			if f.Hidden {
				return
			}
			out = append(out, "--"+f.Name)
			if f.Shorthand != "" && !strings.HasPrefix(cur, "--") {
				out = append(out, "-"+f.Shorthand)
			}
		})
		sort.Strings(out)
		return compNone, out
	case greedy != nil && !afterDashes:
		return cc.flagValue(greedy, "", cur, positionals)
	}
	kinds := positionalKinds(c.usage)
	if len(kinds) == 0 {
		return compNone, nil
	}
	i := len(positionals)
	if i >= len(kinds) {
		if !kinds[len(kinds)-1].repeat {
			return compNone, nil
		}
		i = len(kinds) - 1
	}
	return cc.positional(kinds[i].kind, positionals, cur)
}

// positionalKind is one word of a synopsis.
type positionalKind struct {
	kind   string
	repeat bool
}

// positionalKinds reads the positional arguments of a synopsis such as
// "[options] [--all [--exclude EXCLUDE]] VMNAME [PROPERTY [VALUE]]": the
// upper-case words that are not an option's value.
func positionalKinds(usage string) []positionalKind {
	var out []positionalKind
	skipNext := false
	for _, w := range strings.Fields(usage) {
		w = strings.Trim(w, "[]|")
		if w == "" || w == "options" {
			continue
		}
		if strings.HasPrefix(w, "-") {
			skipNext = true
			continue
		}
		if skipNext {
			skipNext = false
			continue
		}
		repeat := strings.HasSuffix(w, "...")
		out = append(out, positionalKind{kind: strings.TrimSuffix(w, "..."), repeat: repeat})
	}
	return out
}

// load reads the store of the command line's state directory, once; a
// missing or unreadable one gives no names.
func (cc *completer) load() *vm.System {
	if cc.loaded {
		return cc.sys
	}
	cc.loaded = true
	dir := cc.dir
	if dir == "" {
		dir = cc.getenv(store.EnvDir)
	}
	if dir == "" {
		dir = store.DefaultDir
	}
	if fi, err := os.Stat(dir); err != nil || !fi.IsDir() {
		return nil
	}
	st, err := store.Open(dir)
	if err != nil {
		return nil
	}
	sys, err := st.Load()
	if err != nil {
		return nil
	}
	sys.Host = vm.Host{Kernels: st.Kernels()}
	cc.st, cc.sys = st, sys
	return sys
}

// vmNames lists the VMs that pass keep (nil: all).
func (cc *completer) vmNames(keep func(v *vm.View) bool) []string {
	sys := cc.load()
	if sys == nil {
		return nil
	}
	var out []string
	for _, n := range sys.Names() {
		v, _ := sys.View(n)
		if keep == nil || keep(v) {
			out = append(out, n)
		}
	}
	return out
}

// verbVMs are the VMs a verb's VMNAME takes: not dom0 for the verbs that
// cannot act on it.
func (cc *completer) verbVMs() []string {
	switch cc.verb {
	case "start", "shutdown", "kill", "pause", "unpause", "remove", "clone", "tags", "service", "features":
		return cc.vmNames(func(v *vm.View) bool { return v.Class() != vm.AdminVM })
	}
	return cc.vmNames(nil)
}

func (cc *completer) view(name string) *vm.View {
	sys := cc.load()
	if sys == nil {
		return nil
	}
	v, err := sys.View(name)
	if err != nil {
		return nil
	}
	return v
}

// positional completes a positional argument of a kind (its synopsis word).
func (cc *completer) positional(kind string, before []string, cur string) (string, []string) {
	first := ""
	if len(before) > 0 {
		first = before[0]
	}
	switch kind {
	case "VMNAME", "VM":
		return compNone, cc.verbVMs()
	case "PROPERTY":
		if cc.verb == "qubes-prefs" {
			return compNone, vm.GlobalNames()
		}
		return compNone, cc.propertyNames(first)
	case "VALUE":
		if cc.verb == "qubes-prefs" {
			return compNone, cc.globalValues(first)
		}
		if cc.verb == "service" {
			return compNone, []string{"on", "off"}
		}
		if len(before) >= 2 && cc.verb == "prefs" {
			return compNone, cc.propertyValues(first, strings.ReplaceAll(before[1], "-", "_"))
		}
	case "FEATURE":
		if v := cc.view(first); v != nil {
			return compNone, sortedKeys(v.Def().Features, "")
		}
	case "SERVICE":
		if v := cc.view(first); v != nil {
			return compNone, sortedKeys(v.Def().Features, "service.")
		}
	case "ACTION":
		return compNone, []string{"list", "add", "del"}
	case "TAG":
		if len(before) >= 2 && (before[1] == "add" || before[1] == "a" || before[1] == "set") {
			return compNone, cc.allTags()
		}
		if v := cc.view(first); v != nil {
			return compNone, v.Def().Tags
		}
	case "VM:VOLUME", "SOURCE_VM:SOURCE_VOLUME", "DESTINATION_VM:DESTINATION_VOLUME":
		return cc.volumes(cur)
	case "BACKEND:DEVICE_ID":
		if cc.verb == "pci" {
			return compNone, pciCandidates()
		}
	case "dom0:PATH", "PATH":
		return compFiles, nil
	case "CLASS":
		return compNone, classNames()
	case "LABEL":
		return compNone, labelNames()
	}
	return compNone, nil
}

// flagValue completes the value of flag f; prefix is what stands before
// the value in the word being typed ("--label=").
func (cc *completer) flagValue(f *pflag.Flag, prefix, cur string, positionals []string) (string, []string) {
	with := func(list []string) []string {
		out := make([]string, len(list))
		for i, s := range list {
			out[i] = prefix + s
		}
		return out
	}
	switch f.Name {
	case "dir":
		return compDirs, nil
	case "cdrom", "drive", "hddisk", "root-copy-from", "root-move-from":
		return compFiles, nil
	case "template":
		return compNone, with(cc.vmNames(func(v *vm.View) bool { return v.Class() == vm.TemplateVM }))
	case "template-source":
		return compNone, with(cc.vmNames(func(v *vm.View) bool { return v.Class() == vm.TemplateVM || v.Bool("template_for_dispvms") }))
	case "netvm-is":
		return compNone, with(cc.vmNames(func(v *vm.View) bool { return v.ProvidesNetwork() }))
	case "exclude":
		return compNone, with(cc.verbVMs())
	case "label":
		return compNone, with(labelNames())
	case "class":
		if cc.verb == "create" {
			var out []string
			for _, c := range vm.CreatableClasses() {
				out = append(out, string(c))
			}
			return compNone, with(out)
		}
		return compNone, with(classNames())
	case "format":
		return compNone, with(lsFormatNames)
	case "fields", "sort":
		cols := lsColumnNames()
		if f.Name == "sort" {
			return compNone, with(cols)
		}
		// A comma-separated list: complete its last element.
		done := ""
		if i := strings.LastIndexByte(cur, ','); i >= 0 {
			done = cur[:i+1]
		}
		out := make([]string, len(cols))
		for i, col := range cols {
			out[i] = prefix + done + strings.ToLower(col)
		}
		return compNoSpace, out
	case "property", "prop":
		class := vm.AppVM
		return cc.assignment(prefix, cur, cc.propertyNamesOf(class), func(name string) []string {
			return cc.valuesOf(class, name)
		})
	case "prefs":
		return cc.assignment(prefix, cur, cc.propertyNamesOf(vm.StandaloneVM), nil)
	case "features":
		names := map[string]string{}
		for _, n := range cc.vmNames(nil) {
			for k := range cc.view(n).Def().Features {
				names[k] = ""
			}
		}
		return cc.assignment(prefix, cur, sortedKeys(names, ""), nil)
	case "tags", "exclude-tags":
		return compNone, with(cc.allTags())
	case "internal", "servicevm":
		return compNone, with([]string{"y", "n"})
	case "devtype":
		return compNone, with([]string{"cdrom"})
	case "option":
		if cc.verb == "block" {
			return compNone, with([]string{"devtype=cdrom", "read-only=yes"})
		}
		return compNone, with([]string{"permissive=True", "no-strict-reset=True"})
	case "pool", "P":
		if cc.verb == "volume" || f.Name == "P" {
			return compNone, with([]string{vm.ImagePool})
		}
		var out []string
		for _, v := range []string{"root", "private", "volatile"} {
			out = append(out, v+"="+vm.ImagePool)
		}
		return compNone, with(out)
	}
	return compNone, nil
}

// assignment completes NAME=VALUE: the names with "=" (no space after),
// then, past the "=", the name's values.
func (cc *completer) assignment(prefix, cur string, names []string, values func(string) []string) (string, []string) {
	if name, _, ok := strings.Cut(cur, "="); ok {
		if values == nil {
			return compNone, nil
		}
		var out []string
		for _, v := range values(name) {
			out = append(out, prefix+name+"="+v)
		}
		return compNone, out
	}
	out := make([]string, len(names))
	for i, n := range names {
		out[i] = prefix + n + "="
	}
	return compNoSpace, out
}

// propertyNames are the properties of the named VM's class (any class's
// when it is unknown), without the read-only ones for a set.
func (cc *completer) propertyNames(vmName string) []string {
	class := vm.StandaloneVM
	if v := cc.view(vmName); v != nil {
		class = v.Class()
	}
	var out []string
	for _, d := range vm.PropertyDocs(class) {
		out = append(out, d.Name)
	}
	return out
}

// propertyNamesOf are the settable properties of a class.
func (cc *completer) propertyNamesOf(class vm.Class) []string {
	var out []string
	for _, d := range vm.PropertyDocs(class) {
		if !d.ReadOnly {
			out = append(out, d.Name)
		}
	}
	return out
}

// propertyValues are the values worth offering for a VM's property.
func (cc *completer) propertyValues(vmName, prop string) []string {
	class := vm.StandaloneVM
	if v := cc.view(vmName); v != nil {
		class = v.Class()
	}
	return cc.valuesOf(class, prop)
}

func (cc *completer) valuesOf(class vm.Class, prop string) []string {
	kind, ok := vm.PropertyKind(class, prop)
	if !ok {
		return nil
	}
	switch {
	case prop == "virt_mode":
		return []string{string(vm.HVM), string(vm.PV), string(vm.PVH)}
	case prop == "kernel":
		if cc.load() == nil {
			return nil
		}
		return sortedKeys(cc.sys.Host.Kernels, "")
	case prop == "template" && class == vm.DispVM, prop == "default_dispvm", prop == "management_dispvm":
		return append(cc.vmNames(func(v *vm.View) bool { return v.Bool("template_for_dispvms") }), "none")
	case prop == "template":
		return cc.vmNames(func(v *vm.View) bool { return v.Class() == vm.TemplateVM })
	case prop == "netvm":
		return append(cc.vmNames(func(v *vm.View) bool { return v.ProvidesNetwork() }), "none")
	case kind == vm.KindLabel:
		return labelNames()
	case kind == vm.KindBool:
		return []string{"True", "False"}
	case kind == vm.KindVM:
		return append(cc.vmNames(nil), "none")
	}
	return nil
}

// globalValues are the values worth offering for a global setting.
func (cc *completer) globalValues(prop string) []string {
	switch prop {
	case vm.GlobalDefaultNetVM:
		return cc.valuesOf(vm.AppVM, "netvm")
	case vm.GlobalDefaultTemplate:
		return cc.valuesOf(vm.AppVM, "template")
	case vm.GlobalDefaultDispVM, vm.GlobalManagementDispVM:
		return cc.valuesOf(vm.AppVM, "default_dispvm")
	case vm.GlobalDefaultKernel:
		return cc.valuesOf(vm.AppVM, "kernel")
	case vm.GlobalDefaultPoolKernel:
		return []string{vm.KernelPool}
	case vm.GlobalDefaultPool, vm.GlobalDefaultPoolPrivate, vm.GlobalDefaultPoolRoot, vm.GlobalDefaultPoolVolatile:
		return []string{vm.ImagePool}
	}
	return nil
}

// volumes completes VM:VOLUME: VM names with ":" until one is typed,
// then that VM's volumes.
func (cc *completer) volumes(cur string) (string, []string) {
	name, _, ok := strings.Cut(cur, ":")
	if !ok {
		var out []string
		for _, n := range cc.vmNames(func(v *vm.View) bool { return v.Class() != vm.AdminVM }) {
			out = append(out, n+":")
		}
		return compNoSpace, out
	}
	v := cc.view(name)
	if v == nil || cc.st == nil {
		return compNone, nil
	}
	infos, err := volumeInfos(cc.st, v)
	if err != nil {
		return compNone, nil
	}
	var out []string
	for _, in := range infos {
		out = append(out, name+":"+in)
	}
	return compNone, out
}

func (cc *completer) allTags() []string {
	tags := map[string]string{}
	for _, n := range cc.vmNames(nil) {
		for _, t := range cc.view(n).Def().Tags {
			tags[t] = ""
		}
	}
	return sortedKeys(tags, "")
}

func sortedKeys[V any](m map[string]V, prefix string) []string {
	var out []string
	for k := range m {
		if rest, ok := strings.CutPrefix(k, prefix); ok {
			out = append(out, rest)
		}
	}
	sort.Strings(out)
	return out
}

func labelNames() []string {
	var out []string
	for _, l := range vm.Labels() {
		out = append(out, l.Name)
	}
	return out
}

func classNames() []string {
	out := []string{string(vm.AdminVM)}
	for _, c := range vm.CreatableClasses() {
		out = append(out, string(c))
	}
	return out
}

// lsColumnNames are the columns qvm-ls knows: its own and the properties.
func lsColumnNames() []string {
	seen := map[string]bool{}
	var out []string
	add := func(s string) {
		if !seen[s] {
			seen[s] = true
			out = append(out, s)
		}
	}
	for h := range lsColumns {
		add(h)
	}
	for _, c := range classNames() {
		for _, d := range vm.PropertyDocs(vm.Class(c)) {
			add(strings.ToUpper(strings.ReplaceAll(d.Name, "_", "-")))
		}
	}
	sort.Strings(out)
	return out
}
