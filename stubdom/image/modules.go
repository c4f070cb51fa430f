package image

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"io"
	"os"
	"path"
	"path/filepath"
	"sort"
	"strings"

	"github.com/qvm-project/qvm/bootinit"
)

// StageModules copies the modules named in want, and every module they
// depend on, from srcDir (a lib/modules/<version> directory with
// modules.dep) to dstDir, and writes there a modules.dep and
// modules.builtin listing only those. It returns the staged module files
// (relative paths). Modules built into the kernel need no file.
func StageModules(srcDir, dstDir string, want []bootinit.Module) ([]string, error) {
	deps, err := readModulesDep(filepath.Join(srcDir, "modules.dep"))
	if errors.Is(err, os.ErrNotExist) {
		deps = map[string][]string{} // a kernel without modules
	} else if err != nil {
		return nil, err
	}
	builtin, err := readLines(filepath.Join(srcDir, "modules.builtin"))
	if err != nil && !errors.Is(err, os.ErrNotExist) {
		return nil, err
	}
	byName := map[string]string{}
	for p := range deps {
		byName[moduleName(p)] = p
	}
	builtinByName := map[string]string{}
	for _, p := range builtin {
		builtinByName[moduleName(p)] = p
	}
	need := map[string]bool{}
	var keepBuiltin []string
	var visit func(p string)
	visit = func(p string) {
		if need[p] {
			return
		}
		need[p] = true
		for _, d := range deps[p] {
			visit(d)
		}
	}
	for _, m := range want {
		n := strings.ReplaceAll(m.Name, "_", "-")
		if p, ok := byName[n]; ok {
			visit(p)
		} else if p, ok := builtinByName[n]; ok {
			keepBuiltin = append(keepBuiltin, p)
		} else {
			return nil, fmt.Errorf("kernel module %s: not in %s/modules.dep nor built in", m.Name, srcDir)
		}
	}
	var list []string
	for p := range need {
		list = append(list, p)
	}
	sort.Strings(list)
	var dep bytes.Buffer
	for _, p := range list {
		if err := copyFile(filepath.Join(srcDir, p), filepath.Join(dstDir, p)); err != nil {
			return nil, fmt.Errorf("kernel module %s: %w", p, err)
		}
		fmt.Fprintf(&dep, "%s:", p)
		for _, d := range deps[p] {
			fmt.Fprintf(&dep, " %s", d)
		}
		dep.WriteByte('\n')
	}
	if err := os.MkdirAll(dstDir, 0o755); err != nil {
		return nil, err
	}
	if err := os.WriteFile(filepath.Join(dstDir, "modules.dep"), dep.Bytes(), 0o644); err != nil {
		return nil, err
	}
	sort.Strings(keepBuiltin)
	bi := strings.Join(keepBuiltin, "\n")
	if bi != "" {
		bi += "\n"
	}
	if err := os.WriteFile(filepath.Join(dstDir, "modules.builtin"), []byte(bi), 0o644); err != nil {
		return nil, err
	}
	return list, nil
}

// moduleName is the module name of a module file path, with '-'.
func moduleName(p string) string {
	b := path.Base(p)
	for _, ext := range []string{".ko", ".ko.xz", ".ko.gz", ".ko.zst"} {
		if s, ok := strings.CutSuffix(b, ext); ok {
			b = s
			break
		}
	}
	return strings.ReplaceAll(b, "_", "-")
}

// modulesDep is a parsed modules.dep: each module file's dependencies,
// and the module files in the order the file lists them.
type modulesDep struct {
	deps  map[string][]string
	files []string
}

// parseModulesDep parses modules.dep ("path: dep dep ...", one a line;
// blank lines are skipped) from r; name is for errors.
func parseModulesDep(r io.Reader, name string) (modulesDep, error) {
	md := modulesDep{deps: map[string][]string{}}
	sc := bufio.NewScanner(r)
	for n := 1; sc.Scan(); n++ {
		line := strings.TrimSpace(sc.Text())
		if line == "" {
			continue
		}
		mod, rest, ok := strings.Cut(line, ":")
		mod = strings.TrimSpace(mod)
		if !ok || mod == "" {
			return modulesDep{}, fmt.Errorf("%s line %d: %q is not \"module: deps\"", name, n, line)
		}
		md.deps[mod] = strings.Fields(rest)
		md.files = append(md.files, mod)
	}
	if err := sc.Err(); err != nil {
		return modulesDep{}, fmt.Errorf("%s: %w", name, err)
	}
	return md, nil
}

// readModulesDep parses the modules.dep file at p.
func readModulesDep(p string) (map[string][]string, error) {
	md, err := readModulesDepFile(p)
	return md.deps, err
}

func readModulesDepFile(p string) (modulesDep, error) {
	f, err := os.Open(p)
	if err != nil {
		return modulesDep{}, err
	}
	defer f.Close()
	return parseModulesDep(f, p)
}

// LoadOrder lists the modules of the modules.dep file at p so that each
// comes after the modules it depends on (and otherwise in the file's
// order), the order a loader without depmod's help must insert them in.
func LoadOrder(p string) ([]string, error) {
	md, err := readModulesDepFile(p)
	if err != nil {
		return nil, err
	}
	done := map[string]bool{}
	var out []string
	var visit func(m string)
	visit = func(m string) {
		if done[m] {
			return
		}
		done[m] = true
		for _, d := range md.deps[m] {
			visit(d)
		}
		out = append(out, m)
	}
	for _, m := range md.files {
		visit(m)
	}
	return out, nil
}

func readLines(p string) ([]string, error) {
	f, err := os.Open(p)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	var out []string
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		if line := strings.TrimSpace(sc.Text()); line != "" {
			out = append(out, line)
		}
	}
	return out, sc.Err()
}
