package image

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"os"
	"strings"
)

// CheckKernelConfig verifies that a kernel's .config has every setting of
// the fragment it was made from (kernel.config): Kconfig silently drops a
// setting whose dependencies are not met, and a stubdomain kernel without,
// say, its privcmd or netfront driver would boot and fail later. A
// fragment line "CONFIG_X=n" requires X to be unset.
func CheckKernelConfig(fragment, dotconfig io.Reader) error {
	want, err := readKconfig(fragment)
	if err != nil {
		return fmt.Errorf("kernel config fragment: %w", err)
	}
	have, err := readKconfig(dotconfig)
	if err != nil {
		return fmt.Errorf("kernel .config: %w", err)
	}
	var errs []error
	for _, sym := range want.order {
		w, h := want.vals[sym], have.vals[sym]
		if w == "n" {
			if h != "" && h != "n" {
				errs = append(errs, fmt.Errorf("%s is %s, want it off", sym, h))
			}
			continue
		}
		if h != w {
			if h == "" {
				h = "off"
			}
			errs = append(errs, fmt.Errorf("%s is %s, want %s (a dependency is missing from the fragment?)", sym, h, w))
		}
	}
	return errors.Join(errs...)
}

// CheckKernelConfigFiles is CheckKernelConfig on two files.
func CheckKernelConfigFiles(fragment, dotconfig string) error {
	f, err := os.Open(fragment)
	if err != nil {
		return err
	}
	defer f.Close()
	d, err := os.Open(dotconfig)
	if err != nil {
		return err
	}
	defer d.Close()
	if err := CheckKernelConfig(f, d); err != nil {
		return fmt.Errorf("%s does not have what %s asks for: %w", dotconfig, fragment, err)
	}
	return nil
}

type kconfig struct {
	vals  map[string]string
	order []string
}

// readKconfig reads CONFIG_X=v lines and "# CONFIG_X is not set" (= n).
func readKconfig(r io.Reader) (kconfig, error) {
	k := kconfig{vals: map[string]string{}}
	sc := bufio.NewScanner(r)
	n := 0
	for sc.Scan() {
		n++
		line := strings.TrimSpace(sc.Text())
		var sym, val string
		switch {
		case line == "":
			continue
		case strings.HasPrefix(line, "# CONFIG_") && strings.HasSuffix(line, " is not set"):
			sym, val = strings.TrimSuffix(strings.TrimPrefix(line, "# "), " is not set"), "n"
		case strings.HasPrefix(line, "#"):
			continue
		case strings.HasPrefix(line, "CONFIG_"):
			var ok bool
			sym, val, ok = strings.Cut(line, "=")
			if !ok || val == "" {
				return k, fmt.Errorf("line %d: %q is not CONFIG_X=value", n, line)
			}
		default:
			return k, fmt.Errorf("line %d: %q is not a Kconfig setting", n, line)
		}
		if _, dup := k.vals[sym]; dup {
			return k, fmt.Errorf("line %d: %s set twice", n, sym)
		}
		k.vals[sym] = val
		k.order = append(k.order, sym)
	}
	return k, sc.Err()
}
