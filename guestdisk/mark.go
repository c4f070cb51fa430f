package guestdisk

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strconv"
	"strings"
)

// MarkDir holds the marks: MarkDir + NAME exists for every file NAME qvm
// has attached to a loop device since boot (/run is a tmpfs), where NAME
// is the file's path as the kernel reports it in the loop device's
// loop/backing_file, spelled the way udev substitutes it into a rule.
// A mark stays after the device is gone: the file was a VM's disk, and a
// later loop device of it is not for dom0 either.
const MarkDir = "/run/qvm/guest-disks"

// maxName is the longest backing file name a rule can test: udev copies
// $attr{} values into a buffer of UDEV_NAME_SIZE (512) bytes, and a TEST
// key whose path was truncated does not match (systemd 252).
const maxName = 511

// Mark leaves the mark for backing, an open file about to be attached to a
// loop device, so that dom0's udev rules (UdevRules) recognise the device
// at its first uevent. Call it before the loop device is configured.
func Mark(backing *os.File) error {
	// The kernel names the loop device's backing file as it names this
	// open file: both are the file's path (d_path) from the root.
	name, err := os.Readlink("/proc/self/fd/" + strconv.Itoa(int(backing.Fd())))
	if err != nil {
		return fmt.Errorf("mark %s as a VM disk for dom0's udev: %w", backing.Name(), err)
	}
	p, err := MarkPath(name)
	if err != nil {
		return err
	}
	if err := create(p); err != nil {
		return fmt.Errorf("mark %s as a VM disk for dom0's udev: %w (is /run writable?)", name, err)
	}
	return nil
}

// MarkPath returns the mark for a loop device whose backing file the
// kernel reports as name: the path the rule's
// TEST=="/run/qvm/guest-disks$attr{loop/backing_file}" stats. It mirrors
// what systemd 252's udev does to an $attr{} value: drop trailing
// whitespace, keep ASCII letters and digits, "#+-.:=@_/ $%?," , "\x" and
// valid UTF-8, turn other whitespace into a space and anything else into
// "_". Two names may share a mark; that only hides more from dom0.
func MarkPath(name string) (string, error) {
	name = strings.TrimRight(name, "\n\r")
	if len(name) > maxName {
		return "", fmt.Errorf("%.60s...: the path is %d bytes, longer than the %d that dom0's udev rules can match; move the file to a shorter path", name, len(name), maxName)
	}
	if !filepath.IsAbs(name) || filepath.Clean(name) != name {
		return "", fmt.Errorf("mark %q as a VM disk: want an absolute, clean path, as the kernel names a loop device's file", name)
	}
	return MarkDir + udevSubst(name), nil
}

// udevSubst is udev_replace_chars(str, UDEV_ALLOWED_CHARS_INPUT) after
// delete_trailing_chars(str, WHITESPACE), as systemd 252 applies them to
// an $attr{} substitution (src/udev/udev-event.c, src/shared/udev-util.c).
func udevSubst(s string) string {
	b := []byte(strings.TrimRight(s, " \t\n\r"))
	for i := 0; i < len(b); {
		c := b[i]
		switch {
		case c >= '0' && c <= '9' || c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' ||
			strings.IndexByte("#+-.:=@_"+"/ $%?,", c) >= 0:
			i++
		case c == '\\' && i+1 < len(b) && b[i+1] == 'x':
			i += 2
		default:
			if n := validUnichar(b[i:]); n > 1 {
				i += n
				continue
			}
			if c == '\t' || c == '\n' || c == '\v' || c == '\f' || c == '\r' {
				b[i] = ' '
			} else {
				b[i] = '_'
			}
			i++
		}
	}
	return string(b)
}

// validUnichar is systemd's utf8_encoded_valid_unichar: the length of the
// valid UTF-8 character b starts with, or 0.
func validUnichar(b []byte) int {
	c := b[0]
	var n int
	var u rune
	switch {
	case c < 0x80:
		return 1
	case c&0xe0 == 0xc0:
		n, u = 2, rune(c&0x1f)
	case c&0xf0 == 0xe0:
		n, u = 3, rune(c&0x0f)
	case c&0xf8 == 0xf0:
		n, u = 4, rune(c&0x07)
	case c&0xfc == 0xf8:
		n, u = 5, rune(c&0x03)
	case c&0xfe == 0xfc:
		n, u = 6, rune(c&0x01)
	default:
		return 0
	}
	if n > len(b) {
		return 0
	}
	for _, d := range b[1:n] {
		if d&0xc0 != 0x80 {
			return 0
		}
		u = u<<6 | rune(d&0x3f)
	}
	if encodedLen(u) != n || u >= 0x110000 || u&^0x7ff == 0xd800 || u >= 0xfdd0 && u <= 0xfdef || u&0xfffe == 0xfffe {
		return 0
	}
	return n
}

// encodedLen is systemd's utf8_unichar_to_encoded_len.
func encodedLen(u rune) int {
	switch {
	case u < 0x80:
		return 1
	case u < 0x800:
		return 2
	case u < 0x10000:
		return 3
	case u < 0x200000:
		return 4
	case u < 0x4000000:
		return 5
	}
	return 6
}

// create makes the mark p and the directories above it. The rule's TEST
// only stats, so a mark that is a directory (because a longer name needed
// it as one) counts too, and a mark in the way of a directory becomes one.
// A name that ended in whitespace may leave p ending in "/": then the mark
// must be a directory.
func create(p string) error {
	rel, err := filepath.Rel(MarkDir, p)
	if err != nil || rel == "." || strings.HasPrefix(rel, "..") {
		return fmt.Errorf("mark %s is not under %s", p, MarkDir)
	}
	if err := os.MkdirAll(MarkDir, 0o700); err != nil {
		return err
	}
	parts := strings.Split(rel, string(filepath.Separator))
	dir := MarkDir
	for i, part := range parts {
		at := filepath.Join(dir, part)
		last := i == len(parts)-1
		fi, err := os.Lstat(at)
		switch {
		case err == nil && fi.IsDir():
		case err == nil && last && fi.Mode().IsRegular() && !strings.HasSuffix(p, "/"):
		case err == nil:
			// A mark, or something else, where a directory must go.
			if err := os.Remove(at); err != nil {
				return err
			}
			fallthrough
		case errors.Is(err, fs.ErrNotExist):
			if last && !strings.HasSuffix(p, "/") {
				f, err := os.OpenFile(at, os.O_CREATE|os.O_WRONLY, 0o600)
				if err != nil {
					return err
				}
				return f.Close()
			}
			if err := os.Mkdir(at, 0o700); err != nil && !errors.Is(err, fs.ErrExist) {
				return err
			}
		default:
			return err
		}
		dir = at
	}
	return nil
}
