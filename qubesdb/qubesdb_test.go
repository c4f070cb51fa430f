package qubesdb_test

import (
	"bytes"
	"context"
	"encoding/base64"
	"errors"
	"fmt"
	"maps"
	"os/exec"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/qvm-project/qvm/internal/testenv"
	"github.com/qvm-project/qvm/qubesdb"
	"github.com/qvm-project/qvm/xenstore"
	"github.com/qvm-project/qvm/xenstore/xenstoretest"
)

var seed = bytes.Repeat([]byte{0xa5}, 64)

// work is a networked AppVM with qid 122, as in the seeds.
func work() qubesdb.Info {
	return qubesdb.Info{
		Name: "work", Type: "AppVM", DefaultUser: "user", BaseTemplate: "fedora-41",
		Timezone: "Europe/Warsaw", RandomSeed: seed,
		Net: &qubesdb.Net{
			MAC: "00:16:3e:5e:6c:7a", IP: "10.137.0.122", Netmask: "255.255.255.255",
			Gateway: "10.137.0.1", PrimaryDNS: "10.139.1.1", SecondaryDNS: "10.139.1.2",
			IP6: "fd09:24ef:4179::a89:7a", Gateway6: "fd09:24ef:4179::a89:1",
		},
		Services: map[string]bool{"cups": true, "crond": false, "qubes-update-check": true},
	}
}

func TestKeysAppVM(t *testing.T) {
	got, err := qubesdb.Keys(work())
	if err != nil {
		t.Fatal(err)
	}
	want := map[string]string{
		"name":                             "work",
		"type":                             "AppVM",
		"default-user":                     "user",
		"qubes-vm-updateable":              "False",
		"qubes-vm-persistence":             "rw-only",
		"qubes-debug-mode":                 "0",
		"qubes-base-template":              "fedora-41",
		"qubes-random-seed":                base64.StdEncoding.EncodeToString(seed),
		"qubes-timezone":                   "Europe/Warsaw",
		"qubes-block-devices":              "",
		"qubes-usb-devices":                "",
		"qubes-mac":                        "00:16:3e:5e:6c:7a",
		"qubes-ip":                         "10.137.0.122",
		"qubes-netmask":                    "255.255.255.255",
		"qubes-gateway":                    "10.137.0.1",
		"qubes-primary-dns":                "10.139.1.1",
		"qubes-secondary-dns":              "10.139.1.2",
		"qubes-ip6":                        "fd09:24ef:4179::a89:7a",
		"qubes-gateway6":                   "fd09:24ef:4179::a89:1",
		"qubes-service/cups":               "1",
		"qubes-service/crond":              "0",
		"qubes-service/qubes-update-check": "1",
	}
	if !maps.Equal(got, want) {
		t.Fatalf("keys differ:\ngot  %v\nwant %v", got, want)
	}
}

func TestKeysTemplateNetVMNoIPv6(t *testing.T) {
	info := qubesdb.Info{
		Name: "sys-net", Type: "StandaloneVM", DefaultUser: "user", Updateable: true, Debug: true,
		RandomSeed: seed,
		NetVM: &qubesdb.NetVM{
			Network: "10.137.0.0", Gateway: "10.137.0.5", Netmask: "255.255.255.0",
			PrimaryDNS: "10.139.1.1", SecondaryDNS: "10.139.1.2",
		},
	}
	got, err := qubesdb.Keys(info)
	if err != nil {
		t.Fatal(err)
	}
	for k, v := range map[string]string{
		"qubes-vm-updateable": "True", "qubes-vm-persistence": "full", "qubes-debug-mode": "1",
		"qubes-base-template": "", "type": "StandaloneVM",
		"qubes-netvm-network": "10.137.0.0", "qubes-netvm-gateway": "10.137.0.5",
		"qubes-netvm-netmask": "255.255.255.0", "qubes-netvm-primary-dns": "10.139.1.1",
		"qubes-netvm-secondary-dns": "10.139.1.2",
	} {
		if got[k] != v {
			t.Errorf("%s = %q, want %q", k, got[k], v)
		}
	}
	for _, k := range []string{"qubes-ip", "qubes-mac", "qubes-gateway", "qubes-ip6", "qubes-netvm-gateway6"} {
		if _, ok := got[k]; ok {
			t.Errorf("%s present for a VM without netvm or IPv6", k)
		}
	}
	info.NetVM.Gateway6 = "fd09:24ef:4179::a89:5"
	got, _ = qubesdb.Keys(info)
	if got["qubes-netvm-gateway6"] != "fd09:24ef:4179::a89:5" {
		t.Errorf("qubes-netvm-gateway6 = %q", got["qubes-netvm-gateway6"])
	}
}

func TestKeysRandomSeed(t *testing.T) {
	info := work()
	info.RandomSeed = nil
	a, err := qubesdb.Keys(info)
	if err != nil {
		t.Fatal(err)
	}
	b, _ := qubesdb.Keys(info)
	raw, err := base64.StdEncoding.DecodeString(a["qubes-random-seed"])
	if err != nil || len(raw) != 64 {
		t.Fatalf("seed %q: %d bytes, %v", a["qubes-random-seed"], len(raw), err)
	}
	if a["qubes-random-seed"] == b["qubes-random-seed"] {
		t.Fatal("two VMs got the same random seed")
	}
}

func TestKeysRefusesBadInput(t *testing.T) {
	for name, mod := range map[string]func(*qubesdb.Info){
		"empty name":      func(i *qubesdb.Info) { i.Name = "" },
		"empty type":      func(i *qubesdb.Info) { i.Type = "" },
		"short seed":      func(i *qubesdb.Info) { i.RandomSeed = seed[:10] },
		"bad ip":          func(i *qubesdb.Info) { i.Net.IP = "10.137.0" },
		"bad dns":         func(i *qubesdb.Info) { i.Net.SecondaryDNS = "" },
		"bad mac":         func(i *qubesdb.Info) { i.Net.MAC = "00:16:3e" },
		"bad ip6":         func(i *qubesdb.Info) { i.Net.IP6 = "fd09::zz" },
		"slash service":   func(i *qubesdb.Info) { i.Services = map[string]bool{"a/b": true} },
		"dotted service":  func(i *qubesdb.Info) { i.Services = map[string]bool{"a.b": true} },
		"empty service":   func(i *qubesdb.Info) { i.Services = map[string]bool{"": true} },
		"bad netvm gw":    func(i *qubesdb.Info) { i.NetVM = &qubesdb.NetVM{Network: "10.137.0.0", Gateway: "x"} },
		"gateway6 no ip6": func(i *qubesdb.Info) { i.Net.IP6 = "" },
	} {
		info := work()
		mod(&info)
		if k, err := qubesdb.Keys(info); err == nil {
			t.Errorf("%s: accepted, keys %v", name, k)
		} else {
			t.Logf("%s: %v", name, err)
		}
	}
}

func ctxT(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	t.Cleanup(cancel)
	return ctx
}

// readTree returns every node below dir (relative name -> value and perms).
func readTree(t *testing.T, c *xenstore.Client, dir string) (map[string]string, map[string]string) {
	t.Helper()
	ctx := ctxT(t)
	vals, perms := map[string]string{}, map[string]string{}
	var walk func(rel string)
	walk = func(rel string) {
		p := dir
		if rel != "" {
			p += "/" + rel
		}
		names, err := c.Directory(ctx, p)
		if err != nil {
			t.Fatal(err)
		}
		if len(names) == 0 || rel != "" {
			v, err := c.ReadString(ctx, p)
			if err != nil {
				t.Fatal(err)
			}
			pm, err := c.GetPerms(ctx, p)
			if err != nil {
				t.Fatal(err)
			}
			if len(names) == 0 {
				vals[rel] = v
			}
			perms[rel] = pm.String()
		}
		for _, n := range names {
			if rel == "" {
				walk(n)
			} else {
				walk(rel + "/" + n)
			}
		}
	}
	walk("")
	return vals, perms
}

func TestPublishAndRemove(t *testing.T) {
	xsls := testenv.LookPath(t, "xenstore-ls")
	d := xenstoretest.Start(t)
	c := d.Client()
	ctx := ctxT(t)
	const domid = 5
	keys, err := qubesdb.Keys(work())
	if err != nil {
		t.Fatal(err)
	}
	mustNot := func(err error) {
		t.Helper()
		if err != nil {
			t.Fatal(err)
		}
	}
	// A stale key from before must go.
	mustNot(c.WriteString(ctx, qubesdb.Path(domid)+"/stale", "old"))
	mustNot(qubesdb.Publish(ctx, c, domid, keys))

	vals, perms := readTree(t, c, qubesdb.Path(domid))
	if !maps.Equal(vals, keys) {
		t.Fatalf("published tree differs:\ngot  %v\nwant %v", vals, keys)
	}
	for k, p := range perms {
		if p != "n0,r5" {
			t.Errorf("%s has perms %s, want n0,r5", k, p)
		}
	}
	if p, err := c.GetPerms(ctx, qubesdb.Path(domid)); err != nil || p.String() != "n0,r5" {
		t.Errorf("dir perms %v, %v", p, err)
	}

	// The C tool sees the same, key by key.
	cmd := exec.Command(xsls, "-f", "-p", qubesdb.Path(domid))
	cmd.Env = d.Env()
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("xenstore-ls: %s: %v", out, err)
	}
	lines := map[string]string{}
	for _, l := range strings.Split(strings.TrimRight(string(out), "\n"), "\n") {
		name, rest, _ := strings.Cut(l, " = ")
		lines[strings.TrimPrefix(name, qubesdb.Path(domid)+"/")] = rest
	}
	for k, v := range keys {
		rest, ok := lines[k]
		if !ok {
			t.Errorf("xenstore-ls lacks %s:\n%s", k, out)
			continue
		}
		if !strings.HasPrefix(rest, fmt.Sprintf("%q", v)) || !strings.HasSuffix(rest, "(n0,r5)") {
			t.Errorf("xenstore-ls shows %s = %s, want %q with (n0,r5)", k, rest, v)
		}
	}
	if !strings.HasSuffix(lines["qubes-service"], "(n0,r5)") {
		t.Errorf("qubes-service dir: %s", lines["qubes-service"])
	}

	// Publishing again with other keys replaces the set.
	small := map[string]string{"name": "work", "type": "AppVM"}
	mustNot(qubesdb.Publish(ctx, c, domid, small))
	if vals, _ := readTree(t, c, qubesdb.Path(domid)); !maps.Equal(vals, small) {
		t.Fatalf("after republish: %v", vals)
	}

	mustNot(qubesdb.Remove(ctx, c, domid))
	if _, err := c.Read(ctx, qubesdb.Path(domid)); !errors.Is(err, syscall.ENOENT) {
		t.Fatalf("dir after Remove: %v", err)
	}
	names, err := c.Directory(ctx, "/local/domain/5")
	if err != nil || slices.Contains(names, qubesdb.Dir) {
		t.Fatalf("domain home after Remove: %q, %v", names, err)
	}
	mustNot(qubesdb.Remove(ctx, c, domid)) // nothing left: fine
	mustNot(qubesdb.Remove(ctx, c, 77))    // domain home missing: fine

	if err := qubesdb.Publish(ctx, c, domid, map[string]string{"bad key": "x"}); err == nil {
		t.Error("key with a space accepted")
	}
	if err := qubesdb.Publish(ctx, c, domid, map[string]string{"/abs": "x"}); err == nil {
		t.Error("absolute key accepted")
	}
}

// The guest reads its keys and cannot change them; other guests cannot see
// them. Shown with guests speaking through their own rings, so the C
// xenstored applies its unprivileged-domain checks.
func TestGuestView(t *testing.T) {
	d := xenstoretest.Start(t)
	c := d.Client()
	ctx := ctxT(t)
	keys, err := qubesdb.Keys(work())
	if err != nil {
		t.Fatal(err)
	}
	// Worst case for us: the domain owns its home (libxl gives it n0,r5;
	// a home owned by the guest must not let it touch the keys either).
	if err := c.Mkdir(ctx, "/local/domain/5"); err != nil {
		t.Fatal(err)
	}
	if err := c.SetPerms(ctx, "/local/domain/5", xenstore.NewPerms(5, xenstore.AccessNone)); err != nil {
		t.Fatal(err)
	}
	if err := qubesdb.Publish(ctx, c, 5, keys); err != nil {
		t.Fatal(err)
	}
	g5, g6 := d.Guest(5), d.Guest(6)
	dir := qubesdb.Path(5)

	for k, v := range keys {
		got, err := g5.ReadString(ctx, dir+"/"+k)
		if err != nil || got != v {
			t.Errorf("guest reads %s: %q, %v; want %q", k, got, err, v)
		}
		if err := g5.WriteString(ctx, dir+"/"+k, "forged"); !errors.Is(err, syscall.EACCES) {
			t.Errorf("guest writes %s: %v, want EACCES", k, err)
		}
		if err := g5.Rm(ctx, dir+"/"+k); !errors.Is(err, syscall.EACCES) {
			t.Errorf("guest removes %s: %v, want EACCES", k, err)
		}
		if _, err := g6.Read(ctx, dir+"/"+k); !errors.Is(err, syscall.EACCES) {
			t.Errorf("other guest reads %s: %v, want EACCES", k, err)
		}
	}
	if v, err := g5.ReadString(ctx, qubesdb.Dir+"/qubes-ip"); err != nil || v != "10.137.0.122" {
		t.Errorf("guest reads its IP by relative path: %q, %v", v, err)
	}
	if err := g5.WriteString(ctx, dir+"/qubes-new", "x"); !errors.Is(err, syscall.EACCES) {
		t.Errorf("guest adds a key: %v, want EACCES", err)
	}
	if err := g5.Rm(ctx, dir); !errors.Is(err, syscall.EACCES) {
		t.Errorf("guest removes the dir: %v, want EACCES", err)
	}
	if err := g5.SetPerms(ctx, dir+"/qubes-ip", xenstore.NewPerms(5, xenstore.AccessBoth)); !errors.Is(err, syscall.EACCES) {
		t.Errorf("guest takes a key: %v, want EACCES", err)
	}
	if _, err := g6.Directory(ctx, dir); !errors.Is(err, syscall.EACCES) {
		t.Errorf("other guest lists the dir: %v, want EACCES", err)
	}
	// Nothing changed.
	vals, _ := readTree(t, c, dir)
	if !maps.Equal(vals, keys) {
		t.Fatalf("keys changed: %v", vals)
	}
}
