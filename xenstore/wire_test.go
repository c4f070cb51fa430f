package xenstore

import (
	"bufio"
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"io"
	"log/slog"
	"net"
	"slices"
	"syscall"
	"testing"
	"time"
)

func msg(t msgType, req, tx uint32, payload string) []byte {
	return appendMessage(nil, t, req, tx, []byte(payload))
}

func TestReadMessage(t *testing.T) {
	in := slices.Concat(
		msg(msgRead, 7, 0, "value"),
		msg(msgWatchEvent, 0, 0, "/a\x00tok\x00"),
		msg(msgError, 9, 3, "ENOENT\x00"),
		msg(msgDirectory, 10, 0, ""),
	)
	r := bufio.NewReader(bytes.NewReader(in))
	want := []message{
		{header{msgRead, 7, 0, 5}, []byte("value")},
		{header{msgWatchEvent, 0, 0, 7}, []byte("/a\x00tok\x00")},
		{header{msgError, 9, 3, 7}, []byte("ENOENT\x00")},
		{header{msgDirectory, 10, 0, 0}, []byte{}},
	}
	for _, w := range want {
		m, err := readMessage(r)
		if err != nil {
			t.Fatal(err)
		}
		if m.header != w.header || !bytes.Equal(m.Payload, w.Payload) {
			t.Fatalf("got %+v, want %+v", m, w)
		}
	}
	if _, err := readMessage(r); err != io.EOF {
		t.Fatalf("at end: %v, want io.EOF", err)
	}

	bad := map[string][]byte{
		"short header":   msg(msgRead, 1, 0, "x")[:10],
		"short payload":  msg(msgRead, 1, 0, "abcdef")[:19],
		"unknown type":   msg(99, 1, 0, ""),
		"removed type":   msg(20, 1, 0, ""),
		"oversized len":  binary.LittleEndian.AppendUint32(msg(msgRead, 1, 0, "")[:12], PayloadMax+1),
		"huge len":       binary.LittleEndian.AppendUint32(msg(msgRead, 1, 0, "")[:12], 0xffffffff),
		"invalid marker": msg(0xffff, 1, 0, ""),
	}
	for name, b := range bad {
		_, err := readMessage(bufio.NewReader(bytes.NewReader(b)))
		if !errors.Is(err, errProtocol) {
			t.Errorf("%s: %v, want a protocol error", name, err)
		}
	}
}

func TestPayloadDecoders(t *testing.T) {
	if s, err := splitStrings([]byte("a\x00bc\x00\x00")); err != nil || !slices.Equal(s, []string{"a", "bc", ""}) {
		t.Errorf("splitStrings = %q, %v", s, err)
	}
	if _, err := splitStrings([]byte("a\x00b")); err == nil {
		t.Error("unterminated string accepted")
	}
	if s, err := oneString([]byte("/local/domain/3\x00")); err != nil || s != "/local/domain/3" {
		t.Errorf("oneString = %q, %v", s, err)
	}
	if _, err := oneString([]byte("a\x00b\x00")); err == nil {
		t.Error("two strings accepted as one")
	}
	if p, tok, err := decodeWatchEvent([]byte("/x/y\x00t1\x00")); err != nil || p != "/x/y" || tok != "t1" {
		t.Errorf("decodeWatchEvent = %q %q %v", p, tok, err)
	}
	if _, _, err := decodeWatchEvent([]byte("/x/y\x00")); err == nil {
		t.Error("watch event without token accepted")
	}
	g, names, done, err := decodeDirectoryPart([]byte("42\x00a\x00b\x00\x00"))
	if err != nil || g != "42" || !slices.Equal(names, []string{"a", "b"}) || !done {
		t.Errorf("last directory part = %q %q %v %v", g, names, done, err)
	}
	_, names, done, err = decodeDirectoryPart([]byte("42\x00a\x00b\x00"))
	if err != nil || !slices.Equal(names, []string{"a", "b"}) || done {
		t.Errorf("middle directory part = %q %v %v", names, done, err)
	}
}

func TestDaemonErrors(t *testing.T) {
	for name, want := range map[string]syscall.Errno{
		"ENOENT": syscall.ENOENT, "EACCES": syscall.EACCES, "EAGAIN": syscall.EAGAIN,
		"EINVAL": syscall.EINVAL, "E2BIG": syscall.E2BIG, "EQUOTA": syscall.EDQUOT,
		"EEXIST": syscall.EEXIST, "EBUSY": syscall.EBUSY, "EROFS": syscall.EROFS,
		"ENOSPC": syscall.ENOSPC, "EISCONN": syscall.EISCONN, "ENOSYS": syscall.ENOSYS,
		"EIO": syscall.EIO, "ENOMEM": syscall.ENOMEM, "EPERM": syscall.EPERM,
		"EISDIR": syscall.EISDIR, "ENOTEMPTY": syscall.ENOTEMPTY,
	} {
		err := opError(msgWrite, "/p", daemonError([]byte(name+"\x00")))
		if !errors.Is(err, want) {
			t.Errorf("%s: %v does not match %v", name, err, want)
		}
	}
	err := opError(msgRead, "/x", daemonError([]byte("EWHATEVER\x00")))
	var de DaemonError
	if !errors.As(err, &de) || de != "EWHATEVER" {
		t.Errorf("unknown error name: %v", err)
	}
	if !IsQuota(opError(msgWrite, "/q", syscall.ENOSPC)) || !IsQuota(opError(msgWrite, "/q", EQUOTA)) || IsQuota(syscall.ENOENT) {
		t.Error("IsQuota")
	}
	if got := opError(msgRead, "/a/b", syscall.ENOENT).Error(); got != "xenstore read /a/b: no such file or directory (ENOENT)" {
		t.Errorf("error text %q", got)
	}
}

func TestPerms(t *testing.T) {
	for s, want := range map[string]Perm{
		"n0": {0, AccessNone}, "r5": {5, AccessRead}, "w12": {12, AccessWrite},
		"b7": {7, AccessBoth}, "b4294967295": {4294967295, AccessBoth},
	} {
		p, err := ParsePerm(s)
		if err != nil || p != want {
			t.Errorf("ParsePerm(%q) = %v, %v", s, p, err)
		}
		if p.String() != s {
			t.Errorf("%v.String() = %q, want %q", p, p.String(), s)
		}
	}
	for _, s := range []string{"", "n", "x0", "r-1", "r+1", "r 1", "r0x10", "r4294967296", "R5", "r5 "} {
		if p, err := ParsePerm(s); err == nil {
			t.Errorf("ParsePerm(%q) = %v, want an error", s, p)
		}
	}
	ps, err := ParsePerms("n0,r5 b7")
	if err != nil || ps.String() != "n0,r5,b7" || ps.Owner() != 0 {
		t.Errorf("ParsePerms = %v, %v", ps, err)
	}
	if _, err := ParsePerms(" , "); err == nil {
		t.Error("empty perms list accepted")
	}
	if got := NewPerms(3, AccessRead, Perm{9, AccessWrite}).String(); got != "r3,w9" {
		t.Errorf("NewPerms = %s", got)
	}
	if got, err := decodePerms([]byte("n0\x00r5\x00")); err != nil || got.String() != "n0,r5" {
		t.Errorf("decodePerms = %v, %v", got, err)
	}
	if _, err := decodePerms([]byte("n0\x00q5\x00")); err == nil {
		t.Error("bad perms reply accepted")
	}
}

// fuzzSeeds are valid and broken daemon streams.
func fuzzSeeds() [][]byte {
	return [][]byte{
		msg(msgRead, 1, 0, "value"),
		msg(msgError, 1, 0, "EAGAIN\x00"),
		slices.Concat(msg(msgWatchEvent, 0, 0, "/a\x00t\x00"), msg(msgRead, 1, 0, "v")),
		msg(msgWatchEvent, 0, 0, "no-nul"),
		msg(msgDirectoryPart, 1, 0, "7\x00a\x00\x00"),
		msg(msgGetPerms, 1, 0, "n0\x00r5\x00"),
		msg(msgWrite, 1, 0, "OK\x00"),
		msg(msgRead, 1, 0, "")[:7],
		binary.LittleEndian.AppendUint32(msg(msgRead, 1, 0, "")[:12], 1<<31),
		msg(77, 1, 0, "x"),
		{},
	}
}

// FuzzReadMessage feeds arbitrary bytes to the decoder and every payload
// parser: no panic, and no payload larger than the limit.
func FuzzReadMessage(f *testing.F) {
	for _, s := range fuzzSeeds() {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		r := bufio.NewReader(bytes.NewReader(data))
		for {
			m, err := readMessage(r)
			if err != nil {
				return
			}
			if len(m.Payload) > PayloadMax || uint32(len(m.Payload)) != m.Len {
				t.Fatalf("payload of %d bytes for header len %d", len(m.Payload), m.Len)
			}
			splitStrings(m.Payload)
			oneString(m.Payload)
			decodeWatchEvent(m.Payload)
			decodeDirectoryPart(m.Payload)
			decodePerms(m.Payload)
			daemonError(m.Payload)
		}
	})
}

// FuzzClientReplies plays a daemon that answers a request with arbitrary
// bytes (their first req_id set to the request's) and then hangs up: the
// call must return, with a value or an error, and never panic.
func FuzzClientReplies(f *testing.F) {
	for _, s := range fuzzSeeds() {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		client, server := net.Pipe()
		go func() {
			defer server.Close()
			var hdr [headerSize]byte
			if _, err := io.ReadFull(server, hdr[:]); err != nil {
				return
			}
			if _, err := io.CopyN(io.Discard, server, int64(binary.LittleEndian.Uint32(hdr[12:]))); err != nil {
				return
			}
			reply := slices.Clone(data)
			if len(reply) >= 8 {
				copy(reply[4:8], hdr[4:8])
			}
			server.Write(reply)
		}()
		c, err := Open(ctx, Config{
			Dial:   func(context.Context) (io.ReadWriteCloser, error) { return client, nil },
			Logger: slog.New(slog.DiscardHandler),
		})
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		c.Read(ctx, "/x")
		if ctx.Err() != nil {
			t.Fatal("call did not return")
		}
	})
}
