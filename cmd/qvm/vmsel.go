package main

import (
	"fmt"
	"regexp"
	"strings"

	"github.com/qvm-project/qvm/vm"
)

// vmSelection is how Qubes' tools take VMs: VMNAME... (shell wildcards
// match VM names), or --all with --exclude.
type vmSelection struct {
	all     bool
	exclude []string
}

// selection adds --all and --exclude to the command line.
func (c *cmdline) selection(allHelp string) *vmSelection {
	s := &vmSelection{}
	if allHelp == "" {
		allHelp = "perform the action on all qubes"
	}
	c.BoolVar(&s.all, "all", false, allHelp)
	c.StringArrayVar(&s.exclude, "exclude", nil, "exclude the qube from --all")
	return s
}

// resolve turns the command line's VM names into VMs. With --all: every
// VM but dom0 (withDom0: dom0 too) not excluded. Otherwise each name in
// order, a pattern with a wildcard (* ? [ ! ]) standing for the VMs it
// matches (none is not an error, as in Qubes); a name given twice counts
// once. required says at least one VM must be asked for. A name that is no
// VM is a usage error, in Qubes' words.
func (s *vmSelection) resolve(sys *vm.System, names []string, required, withDom0 bool) ([]string, error) {
	if s.all {
		if len(names) > 0 {
			return nil, usagef("argument VMNAME: not allowed with argument --all")
		}
		skip := map[string]bool{}
		for _, e := range s.exclude {
			skip[e] = true
		}
		var out []string
		for _, n := range sys.Names() {
			if !skip[n] && (withDom0 || n != vm.Dom0Name) {
				out = append(out, n)
			}
		}
		return out, nil
	}
	if len(s.exclude) > 0 {
		return nil, usagef("--exclude can only be used with --all")
	}
	if required && len(names) == 0 {
		return nil, usagef("one of the arguments --all VMNAME is required")
	}
	return expandNames(sys, names)
}

// expandNames resolves VM names and wildcard patterns.
func expandNames(sys *vm.System, names []string) ([]string, error) {
	var out []string
	seen := map[string]bool{}
	add := func(n string) {
		if !seen[n] {
			seen[n] = true
			out = append(out, n)
		}
	}
	for _, n := range names {
		if isPattern(n) {
			re := fnmatchRE(n)
			for _, cand := range sys.Names() {
				if re.MatchString(cand) {
					add(cand)
				}
			}
			continue
		}
		if _, ok := sys.Lookup(n); !ok {
			return nil, noSuchDomain(n)
		}
		add(n)
	}
	return out, nil
}

// oneVM resolves the single VM a verb acts on (a pattern must match
// exactly one).
func oneVM(sys *vm.System, name string) (string, error) {
	names, err := expandNames(sys, []string{name})
	if err != nil {
		return "", err
	}
	if len(names) != 1 {
		return "", usagef("%q matches %d VMs (%s): name exactly one", name, len(names), strings.Join(names, ", "))
	}
	return names[0], nil
}

func noSuchDomain(name string) error { return usagef("no such domain: %s", pyRepr(name)) }

// pyRepr quotes a string as Python's repr does for plain text: 'name'.
func pyRepr(s string) string {
	if strings.Contains(s, "'") && !strings.Contains(s, `"`) {
		return `"` + s + `"`
	}
	return "'" + strings.ReplaceAll(strings.ReplaceAll(s, `\`, `\\`), "'", `\'`) + "'"
}

func isPattern(s string) bool { return strings.ContainsAny(s, "*?[!]") }

// fnmatchRE translates a shell pattern as Python's fnmatch does: * any
// run, ? one character, [seq] and [!seq] sets; a [ without its ] is itself.
func fnmatchRE(pat string) *regexp.Regexp {
	var b strings.Builder
	b.WriteString(`\A(?s:`)
	for i := 0; i < len(pat); i++ {
		switch c := pat[i]; c {
		case '*':
			b.WriteString(".*")
		case '?':
			b.WriteString(".")
		case '[':
			j := i + 1
			if j < len(pat) && pat[j] == '!' {
				j++
			}
			if j < len(pat) && pat[j] == ']' {
				j++
			}
			for j < len(pat) && pat[j] != ']' {
				j++
			}
			if j >= len(pat) {
				b.WriteString(`\[`)
				continue
			}
			set := pat[i+1 : j]
			i = j
			neg := strings.HasPrefix(set, "!")
			if neg {
				set = set[1:]
			}
			b.WriteString("[")
			if neg {
				b.WriteString("^")
			}
			for k := 0; k < len(set); k++ {
				switch ch := set[k]; {
				case ch == '-' && k > 0 && k < len(set)-1:
					b.WriteByte('-')
				case ch == '\\' || ch == ']' || ch == '[' || ch == '^' || ch == '-':
					b.WriteByte('\\')
					b.WriteByte(ch)
				default:
					b.WriteByte(ch)
				}
			}
			b.WriteString("]")
		default:
			b.WriteString(regexp.QuoteMeta(string(c)))
		}
	}
	b.WriteString(`)\z`)
	re, err := regexp.Compile(b.String())
	if err != nil {
		// An odd set (a reversed range): match it literally.
		return regexp.MustCompile(`\A` + regexp.QuoteMeta(pat) + `\z`)
	}
	return re
}

// qubesErrorf is an error in Qubes' own words, capital letter included
// ("No such property: x"), for scripts that match on them.
func qubesErrorf(format string, args ...any) error { return fmt.Errorf(format, args...) }
