package pcihost

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"os"
	"strconv"
	"strings"

	"github.com/qvm-project/qvm/termtext"
)

// DBPaths are where Debian (package pci.ids) and hwdata (the one Qubes
// reads) install the PCI id database; LoadDB reads the first that exists.
var DBPaths = []string{"/usr/share/misc/pci.ids", "/usr/share/hwdata/pci.ids"}

// Bounds on what ParseDB reads: the database is a host file, but a
// damaged or hostile one must not exhaust dom0's memory or fill a
// terminal. (Today's pci.ids is 1.4 MB, with lines under 200 bytes.)
const (
	MaxDBSize  = 16 << 20
	MaxDBLine  = 1024
	maxDBName  = 200
	maxEntries = 1 << 20
)

// DB is the PCI id database: the names of vendors, devices and device
// classes (the pci.ids format: "VVVV  vendor", "\tDDDD  device",
// "\t\tSVVV SDDD  subsystem", "C CC  class", "\tSS  subclass",
// "\t\tPP  programming interface"; '#' starts a comment).
type DB struct {
	vendors map[uint16]string
	devices map[uint32]string // vendor<<16 | device
	classes map[uint16]string // class<<8 | subclass; subclass 0 also names the class
}

// ErrNoDB is returned (wrapped) by LoadDB when no database is installed.
var ErrNoDB = errors.New("no PCI id database")

// LoadDB reads the first database of DBPaths that exists.
func LoadDB() (*DB, error) {
	for _, p := range DBPaths {
		f, err := os.Open(p)
		if errors.Is(err, os.ErrNotExist) {
			continue
		}
		if err != nil {
			return nil, fmt.Errorf("PCI id database: %w", err)
		}
		defer f.Close()
		db, err := ParseDB(f)
		if err != nil {
			return nil, fmt.Errorf("PCI id database %s: %w", p, err)
		}
		return db, nil
	}
	return nil, fmt.Errorf("%w in %s: install Debian's pci.ids package (apt-get install pci.ids)", ErrNoDB, strings.Join(DBPaths, " or "))
}

// ParseDB reads a database in the pci.ids format. Lines it does not
// understand are skipped (the format has grown before); a file larger than
// MaxDBSize, or a line longer than MaxDBLine, is an error. Names are kept
// to 200 bytes of text safe for a terminal.
func ParseDB(r io.Reader) (*DB, error) {
	db := &DB{vendors: map[uint16]string{}, devices: map[uint32]string{}, classes: map[uint16]string{}}
	lr := &io.LimitedReader{R: r, N: MaxDBSize + 1}
	sc := bufio.NewScanner(lr)
	sc.Buffer(make([]byte, 0, MaxDBLine), MaxDBLine)
	// What the indented lines belong to.
	var (
		vendor      = -1
		class       = -1
		inClasses   bool
		entries     int
		lineNumbers int
	)
	for sc.Scan() {
		lineNumbers++
		line := strings.TrimRight(sc.Text(), " \r")
		if line == "" || line[0] == '#' {
			continue
		}
		depth := 0
		for depth < len(line) && line[depth] == '\t' {
			depth++
		}
		body := line[depth:]
		if entries++; entries > maxEntries {
			return nil, fmt.Errorf("more than %d entries", maxEntries)
		}
		switch {
		case depth == 0 && strings.HasPrefix(body, "C "):
			id, name, ok := idAndName(body[2:], 8)
			inClasses, vendor, class = true, -1, -1
			if ok {
				class = int(id)
				db.classes[uint16(id)<<8] = name
			}
		case depth == 0:
			id, name, ok := idAndName(body, 16)
			inClasses, vendor, class = false, -1, -1
			// A line of another kind leaves vendor unset: nothing
			// indented below it belongs to a vendor.
			if ok {
				vendor = int(id)
				db.vendors[id] = name
			}
		case depth == 1 && inClasses && class >= 0:
			if id, name, ok := idAndName(body, 8); ok {
				db.classes[uint16(class)<<8|id] = name
			}
		case depth == 1 && !inClasses && vendor >= 0:
			if id, name, ok := idAndName(body, 16); ok {
				db.devices[uint32(vendor)<<16|uint32(id)] = name
			}
		}
		// Depth 2 (subsystems, programming interfaces) is not used.
	}
	if err := sc.Err(); err != nil {
		if errors.Is(err, bufio.ErrTooLong) {
			return nil, fmt.Errorf("line %d is longer than %d bytes: this is not a pci.ids file", lineNumbers+1, MaxDBLine)
		}
		return nil, err
	}
	if lr.N <= 0 {
		return nil, fmt.Errorf("larger than %d bytes: this is not a pci.ids file", MaxDBSize)
	}
	return db, nil
}

// idAndName reads "HEX  name" with a hex id of bits/4 digits.
func idAndName(s string, bits int) (uint16, string, bool) {
	digits := bits / 4
	if len(s) < digits+2 || s[digits] != ' ' {
		return 0, "", false
	}
	n, err := strconv.ParseUint(s[:digits], 16, bits)
	if err != nil {
		return 0, "", false
	}
	name := strings.TrimSpace(s[digits:])
	if name == "" {
		return 0, "", false
	}
	return uint16(n), termtext.Cut(name, maxDBName), true
}

// Vendor names a vendor id.
func (db *DB) Vendor(id uint16) (string, bool) {
	n, ok := db.vendors[id]
	return n, ok
}

// Device names a vendor's device id.
func (db *DB) Device(vendor, id uint16) (string, bool) {
	n, ok := db.devices[uint32(vendor)<<16|uint32(id)]
	return n, ok
}

// Class names a 24-bit class code by its class and subclass (the
// programming interface is ignored), as Qubes does: a subclass the
// database does not list is unknown, except subclass 0, which the class's
// own name covers.
func (db *DB) Class(code uint32) (string, bool) {
	n, ok := db.classes[uint16(code>>8)]
	return n, ok
}

// Describe is a device's description as Qubes' qvm-pci shows it:
// "CLASS: VENDOR DEVICE", e.g. "USB controller: Intel Corporation 7
// Series/C210 Series Chipset Family USB xHCI Host Controller". A name the
// database lacks is "unknown" for the class and the hex id for the vendor
// ("Vendor 1af4") and device ("Device 1041"), as lspci writes them. A nil
// DB knows no names.
func (db *DB) Describe(d Device) string {
	class, vendor, dev := "unknown", fmt.Sprintf("Vendor %04x", d.Vendor), fmt.Sprintf("Device %04x", d.ID)
	if db != nil {
		if n, ok := db.Class(d.Class); ok {
			class = n
		}
		if n, ok := db.Vendor(d.Vendor); ok {
			vendor = n
		}
		if n, ok := db.Device(d.Vendor, d.ID); ok {
			dev = n
		}
	}
	return class + ": " + vendor + " " + dev
}
