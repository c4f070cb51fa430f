package pcihost

import (
	"bytes"
	"errors"
	"os/exec"
	"strings"
	"testing"
	"unicode/utf8"

	"github.com/qvm-project/qvm/internal/testenv"
	"github.com/qvm-project/qvm/termtext"
)

const sampleDB = `# comment
8086  Intel Corporation
	1e31  7 Series/C210 Series Chipset Family USB xHCI Host Controller
		17aa 21f3  ThinkPad T430
	0d57  
1af4  Red Hat, Inc.
	1041  Virtio 1.0 network device
bogus line
	1234  belongs to nothing
C 0c  Serial bus controller
	03  USB controller
		30  XHCI
C 06  Bridge
	00  Host bridge
C 02  Network controller
`

func TestParseDB(t *testing.T) {
	db, err := ParseDB(strings.NewReader(sampleDB))
	if err != nil {
		t.Fatal(err)
	}
	for _, c := range []struct {
		d    Device
		want string
	}{
		{Device{Class: 0x0c0330, Vendor: 0x8086, ID: 0x1e31}, "USB controller: Intel Corporation 7 Series/C210 Series Chipset Family USB xHCI Host Controller"},
		{Device{Class: 0x060000, Vendor: 0x8086, ID: 0x0d57}, "Host bridge: Intel Corporation Device 0d57"},
		{Device{Class: 0x020000, Vendor: 0x1af4, ID: 0x1041}, "Network controller: Red Hat, Inc. Virtio 1.0 network device"},
		{Device{Class: 0x0c8000, Vendor: 0x1234, ID: 0x1234}, "unknown: Vendor 1234 Device 1234"},
	} {
		if got := db.Describe(c.d); got != c.want {
			t.Errorf("Describe(%+v) = %q, want %q", c.d, got, c.want)
		}
	}
	if got := (*DB)(nil).Describe(Device{Class: 0x0c0330, Vendor: 0x8086, ID: 0x1e31}); got != "unknown: Vendor 8086 Device 1e31" {
		t.Errorf("nil DB: %q", got)
	}
	long := strings.Repeat("x", MaxDBLine+1)
	if _, err := ParseDB(strings.NewReader("8086  " + long + "\n")); err == nil || !strings.Contains(err.Error(), "longer than") {
		t.Errorf("long line: %v", err)
	}
	if _, err := ParseDB(&repeatReader{line: []byte("# filler\n"), n: MaxDBSize/9 + 2}); err == nil || !strings.Contains(err.Error(), "larger than") {
		t.Errorf("huge file: %v", err)
	}
	db, _ = ParseDB(strings.NewReader("8086  Evil \x1b]0;x\x07 Corp\n"))
	if n, _ := db.Vendor(0x8086); strings.ContainsAny(n, "\x1b\x07") {
		t.Errorf("control bytes kept: %q", n)
	}
}

type repeatReader struct {
	line []byte
	n    int
	buf  []byte
}

func (r *repeatReader) Read(p []byte) (int, error) {
	for len(r.buf) < len(p) && r.n > 0 {
		r.buf = append(r.buf, r.line...)
		r.n--
	}
	if len(r.buf) == 0 {
		return 0, errors.New("EOF")
	}
	n := copy(p, r.buf)
	r.buf = r.buf[n:]
	return n, nil
}

// TestDescribeLikeLspci: the installed database names this host's devices
// as lspci (which reads the same file) does.
func TestDescribeLikeLspci(t *testing.T) {
	db, err := LoadDB()
	if errors.Is(err, ErrNoDB) {
		testenv.Missing(t, "%v", err)
	}
	if err != nil {
		t.Fatal(err)
	}
	lspci := testenv.LookPath(t, "lspci")
	out, err := exec.Command(lspci, "-mm").Output()
	if err != nil {
		t.Fatal(err)
	}
	devs, err := List()
	if err != nil {
		t.Fatal(err)
	}
	if len(devs) == 0 {
		testenv.Missing(t, "no PCI devices")
	}
	rows := map[string][]string{}
	for _, line := range strings.Split(strings.TrimSpace(string(out)), "\n") {
		f := strings.Split(line, `"`)
		if len(f) >= 6 {
			rows[strings.TrimSpace(f[0])] = []string{f[1], f[3], f[5]}
		}
	}
	for _, d := range devs {
		r, ok := rows[d.BDF]
		if !ok {
			t.Errorf("%s: not in lspci -mm", d.BDF)
			continue
		}
		want := r[1] + " " + r[2]
		desc := db.Describe(d)
		class, rest, _ := strings.Cut(desc, ": ")
		if rest != want {
			t.Errorf("%s: %q, lspci says %q", d.BDF, rest, want)
		}
		if class != "unknown" && class != r[0] {
			t.Errorf("%s: class %q, lspci says %q", d.BDF, class, r[0])
		}
	}
}

func FuzzParseDB(f *testing.F) {
	f.Add([]byte(sampleDB))
	f.Add([]byte("C zz  x\n\t00  y\n"))
	f.Add([]byte("\t\t\t\n0000 \n"))
	f.Fuzz(func(t *testing.T, b []byte) {
		db, err := ParseDB(bytes.NewReader(b))
		if err != nil {
			return
		}
		for _, m := range []map[uint16]string{db.vendors, db.classes} {
			for _, n := range m {
				checkName(t, n)
			}
		}
		for _, n := range db.devices {
			checkName(t, n)
		}
	})
}

func checkName(t *testing.T, n string) {
	if n == "" || len(n) > 4*maxDBName+3 || !utf8.ValidString(n) {
		t.Fatalf("bad name %q", n)
	}
	for _, r := range n {
		if termtext.Unsafe(r) {
			t.Fatalf("unsafe rune in %q", n)
		}
	}
}
