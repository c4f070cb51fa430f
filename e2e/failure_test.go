package e2e

import (
	"context"
	"errors"
	"strings"
	"testing"

	"github.com/qvm-project/qvm/e2e/hostjob"
	"github.com/qvm-project/qvm/e2e/xenvm"
)

// TestXenBedFailures checks that a boot that cannot do its job ends
// promptly with the reason, instead of hanging until the timeout.
func TestXenBedFailures(t *testing.T) {
	p := bedParts(t)
	t.Run("missing command", func(t *testing.T) {
		res, err := xenvm.Run(context.Background(), xenvm.Config{Parts: p, Job: hostjob.Job{Argv: []string{"/no/such/command"}}})
		if err != nil {
			t.Fatal(err)
		}
		if res.Status.ExitCode != -1 || !strings.Contains(res.Status.Error, "/no/such/command") {
			t.Fatalf("status %+v: want exit code -1 and an error naming the command", res.Status)
		}
	})
	t.Run("bad command line", func(t *testing.T) {
		// dom0init takes the last qvm.run: this one is not valid.
		_, err := xenvm.Run(context.Background(), xenvm.Config{Parts: p, Job: hostjob.Job{Argv: []string{"/bin/true"}}, KernelArgs: []string{"qvm.run=bogus"}})
		if !errors.Is(err, xenvm.ErrNoStatus) {
			t.Fatalf("Run: %v, want ErrNoStatus", err)
		}
		if !strings.Contains(err.Error(), `FAILED: kernel command line: qvm.run="bogus"`) {
			t.Fatalf("error does not carry dom0init's reason:\n%v", err)
		}
	})
}
