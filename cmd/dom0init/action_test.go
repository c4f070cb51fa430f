package main

import (
	"reflect"
	"strings"
	"testing"
)

// flagMap is a parsed kernel command line, as cmdline.CmdLine holds it
// (quotes already removed).
type flagMap map[string]string

func (m flagMap) Flag(name string) (string, bool) {
	v, ok := m[name]
	return v, ok
}

func TestParseAction(t *testing.T) {
	tests := []struct {
		flags flagMap
		want  action
		err   string
	}{
		{flags: flagMap{}, want: action{kind: actShell}},
		{flags: flagMap{"qvm.run": "none"}, want: action{kind: actNone}},
		{flags: flagMap{"qvm.run": "job", "qvm.share": "host", "qvm.echo": "1"}, want: action{kind: actJob, share: "host", echo: true}},
		{flags: flagMap{"qvm.run": "exec:/bin/qvm-ls -n"}, want: action{kind: actExec, argv: []string{"/bin/qvm-ls", "-n"}}},
		{flags: flagMap{"qvm.run": `exec:/bin/sh -c 'echo a b'`}, want: action{kind: actExec, argv: []string{"/bin/sh", "-c", "echo a b"}}},
		{flags: flagMap{"qvm.run": "job"}, err: "needs qvm.share"},
		{flags: flagMap{"qvm.run": "exec:true"}, err: "absolute"},
		{flags: flagMap{"qvm.run": "exec:"}, err: "absolute"},
		{flags: flagMap{"qvm.run": "demo"}, err: "want shell"},
	}
	for _, tt := range tests {
		got, err := parseAction(tt.flags)
		if tt.err != "" {
			if err == nil || !strings.Contains(err.Error(), tt.err) {
				t.Errorf("%v: error %v, want one containing %q", tt.flags, err, tt.err)
			}
			continue
		}
		if err != nil {
			t.Errorf("%v: %v", tt.flags, err)
			continue
		}
		if !reflect.DeepEqual(got, tt.want) {
			t.Errorf("%v: got %+v, want %+v", tt.flags, got, tt.want)
		}
	}
}

// FuzzParseAction feeds arbitrary qvm.run values: an accepted exec action
// always names an absolute path.
func FuzzParseAction(f *testing.F) {
	f.Add(`exec:/bin/sh -c 'echo hi'`)
	f.Add("job")
	f.Add(`exec:"`)
	f.Add(`exec: /x`)
	f.Fuzz(func(t *testing.T, run string) {
		a, err := parseAction(flagMap{"qvm.run": run, "qvm.share": "x"})
		if err == nil && a.kind == actExec && (len(a.argv) == 0 || !strings.HasPrefix(a.argv[0], "/")) {
			t.Fatalf("%q: accepted exec without an absolute path: %q", run, a.argv)
		}
	})
}
