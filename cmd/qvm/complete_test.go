package main

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/qvm-project/qvm/internal/testenv"
)

// bashWords splits a command line as bash does for COMP_WORDS: at blanks,
// and each of COMP_WORDBREAKS' '=' and ':' is a word of its own.
func bashWords(line string) ([]string, int) {
	var words []string
	cur := ""
	flush := func() {
		if cur != "" {
			words = append(words, cur)
			cur = ""
		}
	}
	for _, r := range line {
		switch r {
		case ' ':
			flush()
		case '=', ':':
			flush()
			words = append(words, string(r))
		default:
			cur += string(r)
		}
	}
	flush()
	if strings.HasSuffix(line, " ") {
		words = append(words, "")
	}
	return words, len(words) - 1
}

// TestBashCompletion sources the completion script into a real bash, with
// Debian's bash-completion loaded, and calls its function as readline
// would (COMP_WORDS, COMP_CWORD, COMP_LINE, COMP_POINT set) for lines a
// Qubes user types.
func TestBashCompletion(t *testing.T) {
	bash := testenv.LookPath(t, "bash")
	const lib = "/usr/share/bash-completion/bash_completion"
	if _, err := os.Stat(lib); err != nil {
		testenv.Missing(t, "bash-completion (%s): %v", lib, err)
	}
	e := paritySetup(t)
	e.installKernel("6.1.0")
	var script bytes.Buffer
	bashCompletion(&script)
	scriptPath := filepath.Join(t.TempDir(), "qvm.bash")
	if err := os.WriteFile(scriptPath, script.Bytes(), 0o644); err != nil {
		t.Fatal(err)
	}
	// make install puts qvm beside its links.
	if err := os.Symlink(qvmBin, filepath.Join(e.bin, "qvm")); err != nil {
		t.Fatal(err)
	}
	files := t.TempDir()
	os.WriteFile(filepath.Join(files, "installer.iso"), nil, 0o644)
	os.Mkdir(filepath.Join(files, "isos"), 0o755)
	for _, c := range []struct {
		line string
		want []string
	}{
		{"qvm-prefs wo", []string{"work"}},
		{"qvm-prefs ", []string{"Banking", "debian-12", "disp1", "dom0", "dvm", "fedora-41", "sys-firewall", "sys-net", "work"}},
		{"qvm-start ", []string{"Banking", "debian-12", "disp1", "dvm", "fedora-41", "sys-firewall", "sys-net", "work"}},
		{"qvm-prefs work net", []string{"netvm"}},
		{"qvm-prefs work t", []string{"template", "template_for_dispvms"}},
		{"qvm-prefs work netvm ", []string{"dom0", "sys-firewall", "sys-net", "none"}},
		{"qvm-prefs work virt_mode p", []string{"pv", "pvh"}},
		{"qvm-prefs work kernel ", []string{"6.1.0"}},
		{"qvm-prefs disp1 template ", []string{"dvm", "none"}},
		{"qvm-prefs work label g", []string{"green", "gray"}},
		{"qvm-prefs --hide", []string{"--hide-default"}},
		{"qvm-prefs -", []string{"--default", "--dir", "--get", "--help", "--help-properties", "--hide-default", "--quiet", "--set", "--verbose", "--version", "-D", "-g", "-h", "-q", "-s", "-v"}},
		{"qubes-prefs default_net", []string{"default_netvm"}},
		{"qubes-prefs default_template ", []string{"debian-12", "fedora-41"}},
		{"qvm-create --label ", []string{"red", "orange", "yellow", "green", "gray", "blue", "purple", "black"}},
		{"qvm-create -l bl", []string{"blue", "black"}},
		{"qvm-create --class S", []string{"StandaloneVM"}},
		{"qvm-create --template ", []string{"debian-12", "fedora-41"}},
		{"qvm-create --property virt", []string{"virt_mode="}},
		{"qvm-create --property=virt_mode=h", []string{"hvm"}},
		{"qvm-create --prop netvm=sys", []string{"sys-firewall", "sys-net"}},
		{"qvm-ls --format ", []string{"simple", "network", "kernel", "full", "prefs", "disk", "json"}},
		{"qvm-ls -o n", []string{"network"}},
		{"qvm-ls --fields name,ip", []string{"name,ip", "name,ip6", "name,ipback"}},
		{"qvm-ls --class AppVM Disp", []string{"DispVM"}},
		{"qvm-ls --netvm-is ", []string{"dom0", "sys-firewall", "sys-net"}},
		{"qvm-ls --tags ", []string{"net", "personal"}},
		{"qvm-ls --exclude w", []string{"work"}},
		{"qvm-volume ", []string{"info", "config", "resize", "list", "revert", "import", "clone", "clear"}},
		{"qvm-volume info wo", []string{"work:"}},
		{"qvm-volume info work:", []string{"root", "private", "volatile", "kernel"}},
		{"qvm-volume info work:pr", []string{"private"}},
		{"qvm-volume resize --", []string{"--dir", "--force", "--help", "--quiet", "--verbose", "--version"}},
		{"qvm-features sys-net up", []string{"updates-available"}},
		{"qvm-service work ", nil},
		{"qvm-tags work ", []string{"list", "add", "del"}},
		{"qvm-tags work del ", []string{"net", "personal"}},
		{"qvm-tags Banking add ", []string{"net", "personal"}},
		{"qvm-pci attach --option ", []string{"permissive=True", "no-strict-reset=True"}},
		{"qvm-start --cdrom " + files + "/ins", []string{files + "/installer.iso"}},
		{"qvm-start --cdrom=dom0:" + files + "/is", []string{files + "/isos"}},
		{"qvm-ls --dir " + files + "/i", []string{files + "/isos"}},
		{"qvm pr", []string{"prefs"}},
		{"qvm prefs wo", []string{"work"}},
		{"qvm-check --", []string{"--all", "--dir", "--exclude", "--help", "--networked", "--paused", "--quiet", "--running", "--template", "--verbose", "--version"}},
	} {
		words, cword := bashWords(c.line)
		quoted := make([]string, len(words))
		for i, w := range words {
			quoted[i] = "'" + strings.ReplaceAll(w, "'", `'\''`) + "'"
		}
		prog := fmt.Sprintf(`source %s
source %s
COMP_WORDS=(%s)
COMP_CWORD=%d
COMP_LINE=%s
COMP_POINT=${#COMP_LINE}
_qvm
printf '%%s\n' "${COMPREPLY[@]}"
`, lib, scriptPath, strings.Join(quoted, " "), cword, "'"+c.line+"'")
		cmd := exec.CommandContext(context.Background(), bash, "--norc", "--noprofile", "-c", prog)
		cmd.Env = append(os.Environ(), "PATH="+e.bin+":"+os.Getenv("PATH"), "QVM_DIR="+e.dir)
		out, err := cmd.CombinedOutput()
		if err != nil {
			t.Errorf("%q: %v\n%s", c.line, err, out)
			continue
		}
		got := strings.Split(strings.TrimSuffix(string(out), "\n"), "\n")
		if len(got) == 1 && got[0] == "" {
			got = nil
		}
		if strings.Join(got, "|") != strings.Join(c.want, "|") {
			t.Errorf("%q: completes to %q, want %q", c.line, got, c.want)
		}
	}
}

// TestCompletionScriptNamesEveryCommand: the script is registered for qvm
// and each qvm-* command, and bash accepts it.
func TestCompletionScriptNamesEveryCommand(t *testing.T) {
	bash := testenv.LookPath(t, "bash")
	r := newEnv(t).run("qvm", "--completion", "bash")
	if r.code != 0 {
		t.Fatalf("qvm --completion bash: %+v", r)
	}
	out, err := exec.Command(bash, "--norc", "--noprofile", "-c", r.stdout+"\ncomplete -p").CombinedOutput()
	if err != nil {
		t.Fatalf("bash: %v\n%s", err, out)
	}
	for _, v := range verbs() {
		if v.hidden {
			continue
		}
		if !strings.Contains(string(out), "complete -F _qvm "+v.linkName()+"\n") {
			t.Errorf("no completion for %s:\n%s", v.linkName(), out)
		}
	}
}
