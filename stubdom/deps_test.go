package stubdom

import (
	"os/exec"
	"slices"
	"strings"
	"testing"

	"github.com/qvm-project/qvm/internal/testenv"
)

// TestInitLinksNoImageBuilder: the stubdomain's init (cmd/stubdominit)
// imports this package for the contract, and links neither the image
// builder (stubdom/image) nor u-root's cpio code: they would only make the
// init bigger, in every stubdomain's memory.
func TestInitLinksNoImageBuilder(t *testing.T) {
	goCmd := testenv.LookPath(t, "go")
	const (
		self = "github.com/qvm-project/qvm/stubdom"
		init = "github.com/qvm-project/qvm/cmd/stubdominit"
	)
	for _, pkg := range []string{self, init} {
		out, err := exec.Command(goCmd, "list", "-deps", "-f", "{{.ImportPath}}", pkg).Output()
		if err != nil {
			var stderr []byte
			if ee, ok := err.(*exec.ExitError); ok {
				stderr = ee.Stderr
			}
			t.Fatalf("go list -deps %s: %v\n%s", pkg, err, stderr)
		}
		deps := strings.Fields(string(out))
		if !slices.Contains(deps, self) {
			t.Fatalf("go list -deps %s does not list %s: %q", pkg, self, deps)
		}
		for _, d := range deps {
			if d == self+"/image" || d == "github.com/u-root/u-root/pkg/cpio" || strings.HasPrefix(d, "github.com/u-root/u-root/pkg/cpio/") {
				t.Errorf("%s links %s", pkg, d)
			}
		}
	}
}
