//go:build cgo && qvmleakcanary

package xl

/*
#include <stdlib.h>
*/
import "C"

// leakCanary leaks 4 KiB of C memory on purpose. It exists only in builds
// tagged qvmleakcanary, which `make test` uses to prove that its leak
// check (go test -asan, LeakSanitizer) really reports leaked C memory.
func leakCanary() {
	C.malloc(4096)
}
