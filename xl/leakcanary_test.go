//go:build cgo && qvmleakcanary

package xl

import "testing"

// TestLeakCanary leaks C memory; under -asan the test binary must then
// fail at exit. See mk/xl.mk.
func TestLeakCanary(t *testing.T) { leakCanary() }
