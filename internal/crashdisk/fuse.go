package crashdisk

import (
	"encoding/binary"
	"errors"
	"fmt"
	"os"
	"sync"

	"golang.org/x/sys/unix"
)

// The parts of the FUSE protocol (linux/fuse.h) that serving one regular
// file needs.
const (
	opLookup      = 1
	opForget      = 2
	opGetattr     = 3
	opSetattr     = 4
	opOpen        = 14
	opRead        = 15
	opWrite       = 16
	opStatfs      = 17
	opRelease     = 18
	opFsync       = 20
	opFlush       = 25
	opInit        = 26
	opAccess      = 34
	opInterrupt   = 36
	opDestroy     = 38
	opBatchForget = 42
	opFallocate   = 43

	fuseMajor    = 7
	fuseMinor    = 31
	bigWrites    = 1 << 5
	maxPagesFlag = 1 << 22
	openDirectIO = 1 << 0

	inHeaderSize  = 40
	outHeaderSize = 16
	attrSize      = 88

	rootID = 1
	fileID = 2

	// maxWrite is the largest write the kernel sends in one request.
	maxWrite = 1 << 20
)

// fileName is the name of the served file in the mount.
const fileName = "disk"

// server answers the kernel's requests for one file, whose contents are
// img, one request at a time: so the order in which it logs writes and
// fsyncs is the order in which they completed.
type server struct {
	dev  *os.File // /dev/fuse
	img  *os.File
	size int64
	log  *writeLog

	mu   sync.Mutex
	err  error // the first failure to serve a request
	done chan struct{}
}

func le32(b []byte) uint32 { return binary.LittleEndian.Uint32(b) }
func le64(b []byte) uint64 { return binary.LittleEndian.Uint64(b) }

// serve reads and answers requests until the connection ends.
func (s *server) serve() {
	defer close(s.done)
	buf := make([]byte, maxWrite+64<<10)
	for {
		n, err := unix.Read(int(s.dev.Fd()), buf)
		switch {
		case errors.Is(err, unix.EINTR), errors.Is(err, unix.ENOENT), errors.Is(err, unix.EAGAIN):
			continue // interrupted, or a request the kernel withdrew
		case errors.Is(err, unix.ENODEV):
			return // unmounted
		case err != nil:
			s.fail(fmt.Errorf("read /dev/fuse: %w", err))
			return
		}
		if n < inHeaderSize {
			s.fail(fmt.Errorf("short FUSE request of %d bytes", n))
			return
		}
		req := buf[:n]
		if err := s.handle(req); err != nil {
			s.fail(err)
			if errors.Is(err, unix.ENODEV) {
				return
			}
		}
	}
}

func (s *server) fail(err error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.err == nil {
		s.err = err
	}
}

func (s *server) failure() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.err
}

// handle answers one request.
func (s *server) handle(req []byte) error {
	op := le32(req[4:])
	unique := le64(req[8:])
	node := le64(req[16:])
	in := req[inHeaderSize:]
	switch op {
	case opForget, opBatchForget, opInterrupt:
		return nil // no answer
	case opInit:
		if len(in) < 16 {
			return s.reply(unique, unix.EINVAL, nil)
		}
		minor := le32(in[4:])
		if le32(in) != fuseMajor {
			return s.reply(unique, unix.EPROTO, nil)
		}
		if minor > fuseMinor {
			minor = fuseMinor
		}
		out := make([]byte, 64)
		binary.LittleEndian.PutUint32(out[0:], fuseMajor)
		binary.LittleEndian.PutUint32(out[4:], minor)
		binary.LittleEndian.PutUint32(out[8:], le32(in[8:])) // max_readahead
		binary.LittleEndian.PutUint32(out[12:], (bigWrites|maxPagesFlag)&le32(in[12:]))
		binary.LittleEndian.PutUint16(out[16:], 16) // max_background
		binary.LittleEndian.PutUint16(out[18:], 12) // congestion_threshold
		binary.LittleEndian.PutUint32(out[20:], maxWrite)
		binary.LittleEndian.PutUint32(out[24:], 1) // time_gran
		binary.LittleEndian.PutUint16(out[28:], maxWrite/4096)
		return s.reply(unique, 0, out)
	case opLookup:
		name := in
		if i := indexZero(name); i >= 0 {
			name = name[:i]
		}
		if node != rootID || string(name) != fileName {
			return s.reply(unique, unix.ENOENT, nil)
		}
		out := make([]byte, 40+attrSize)
		binary.LittleEndian.PutUint64(out[0:], fileID)
		binary.LittleEndian.PutUint64(out[16:], 3600) // entry_valid
		binary.LittleEndian.PutUint64(out[24:], 3600) // attr_valid
		s.attr(out[40:], fileID)
		return s.reply(unique, 0, out)
	case opGetattr, opSetattr:
		if node != rootID && node != fileID {
			return s.reply(unique, unix.ENOENT, nil)
		}
		if op == opSetattr && len(in) >= 24 && le32(in)&(1<<3) != 0 && int64(le64(in[16:])) != s.size {
			return s.reply(unique, unix.EPERM, nil) // the disk keeps its size
		}
		out := make([]byte, 16+attrSize)
		binary.LittleEndian.PutUint64(out[0:], 3600)
		s.attr(out[16:], node)
		return s.reply(unique, 0, out)
	case opOpen:
		if node != fileID {
			return s.reply(unique, unix.EISDIR, nil)
		}
		out := make([]byte, 16)
		binary.LittleEndian.PutUint64(out[0:], 1)
		// No page cache: every write reaches this server when the
		// block layer issues it, every fsync after them.
		binary.LittleEndian.PutUint32(out[8:], openDirectIO)
		return s.reply(unique, 0, out)
	case opRead:
		off, size := int64(le64(in[8:])), int64(le32(in[16:]))
		if off >= s.size {
			return s.reply(unique, 0, nil)
		}
		size = min(size, s.size-off)
		out := make([]byte, size)
		n, err := s.img.ReadAt(out, off)
		if err != nil && int64(n) < size {
			return s.reply(unique, unix.EIO, nil)
		}
		return s.reply(unique, 0, out[:n])
	case opWrite:
		off, size := int64(le64(in[8:])), int64(le32(in[16:]))
		data := in[40:]
		if int64(len(data)) < size || off < 0 || off+size > s.size {
			return s.reply(unique, unix.EINVAL, nil)
		}
		data = data[:size]
		if err := s.log.write(off, data); err != nil {
			s.fail(err)
			return s.reply(unique, unix.EIO, nil)
		}
		if _, err := s.img.WriteAt(data, off); err != nil {
			s.fail(err)
			return s.reply(unique, unix.EIO, nil)
		}
		out := make([]byte, 8)
		binary.LittleEndian.PutUint32(out, uint32(size))
		return s.reply(unique, 0, out)
	case opFsync:
		// The loop device's flush (and the flush after a FUA write, which
		// the block layer emulates for loop).
		if err := s.log.flush(); err != nil {
			s.fail(err)
			return s.reply(unique, unix.EIO, nil)
		}
		return s.reply(unique, 0, nil)
	case opFallocate:
		// Discards and zeroed ranges: both read back as zeros.
		off, n, mode := int64(le64(in[8:])), int64(le64(in[16:])), le32(in[24:])
		if mode&(unix.FALLOC_FL_PUNCH_HOLE|unix.FALLOC_FL_ZERO_RANGE) == 0 {
			return s.reply(unique, 0, nil)
		}
		if off < 0 || n < 0 || off+n > s.size {
			return s.reply(unique, unix.EINVAL, nil)
		}
		if err := s.log.zero(off, n); err != nil {
			s.fail(err)
			return s.reply(unique, unix.EIO, nil)
		}
		if err := unix.Fallocate(int(s.img.Fd()), unix.FALLOC_FL_PUNCH_HOLE|unix.FALLOC_FL_KEEP_SIZE, off, n); err != nil {
			s.fail(err)
			return s.reply(unique, unix.EIO, nil)
		}
		return s.reply(unique, 0, nil)
	case opStatfs:
		out := make([]byte, 80)
		binary.LittleEndian.PutUint32(out[40:], 4096) // bsize
		binary.LittleEndian.PutUint32(out[44:], 255)  // namelen
		binary.LittleEndian.PutUint32(out[48:], 4096) // frsize
		return s.reply(unique, 0, out)
	case opFlush, opRelease, opAccess:
		// FUSE's flush is a close(), not a disk flush.
		return s.reply(unique, 0, nil)
	case opDestroy:
		return s.reply(unique, 0, nil)
	}
	return s.reply(unique, unix.ENOSYS, nil)
}

func indexZero(b []byte) int {
	for i, c := range b {
		if c == 0 {
			return i
		}
	}
	return -1
}

// attr fills a fuse_attr for node.
func (s *server) attr(b []byte, node uint64) {
	binary.LittleEndian.PutUint64(b[0:], node)
	if node == rootID {
		binary.LittleEndian.PutUint32(b[60:], unix.S_IFDIR|0o755)
		binary.LittleEndian.PutUint32(b[64:], 2)
		return
	}
	binary.LittleEndian.PutUint64(b[8:], uint64(s.size))
	binary.LittleEndian.PutUint64(b[16:], uint64(s.size+511)/512)
	binary.LittleEndian.PutUint32(b[60:], unix.S_IFREG|0o600)
	binary.LittleEndian.PutUint32(b[64:], 1)
	binary.LittleEndian.PutUint32(b[80:], 4096)
}

// reply answers request unique with errno (0 for success) and out.
func (s *server) reply(unique uint64, errno unix.Errno, out []byte) error {
	msg := make([]byte, outHeaderSize+len(out))
	binary.LittleEndian.PutUint32(msg[0:], uint32(len(msg)))
	binary.LittleEndian.PutUint32(msg[4:], uint32(-int32(errno)))
	binary.LittleEndian.PutUint64(msg[8:], unique)
	copy(msg[outHeaderSize:], out)
	_, err := unix.Write(int(s.dev.Fd()), msg)
	if errors.Is(err, unix.ENOENT) {
		return nil // the request was interrupted meanwhile
	}
	if err != nil {
		return fmt.Errorf("answer FUSE request: %w", err)
	}
	return nil
}
