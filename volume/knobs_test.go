package volume

// Test-only knobs that force the fallback paths on filesystems that would
// otherwise take the fast one.

// withReadWrite skips FICLONE and copy_file_range.
func withReadWrite() Option { return func(o *options) { o.noReflink, o.readWrite = true, true } }

// withNamedTemp uses a named temporary file instead of O_TMPFILE.
func withNamedTemp() Option { return func(o *options) { o.namedTemp = true } }
