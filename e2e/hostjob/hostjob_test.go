package hostjob

import (
	"errors"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
)

func TestJobRoundTrip(t *testing.T) {
	dir := t.TempDir()
	j := Job{Argv: []string{"/bin/x", "a b"}, Env: []string{"K=V"}, Dir: "/tmp"}
	if err := WriteJob(dir, j); err != nil {
		t.Fatal(err)
	}
	got, err := ReadJob(dir)
	if err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(got, j) {
		t.Fatalf("got %+v, want %+v", got, j)
	}
}

func TestStatusRoundTrip(t *testing.T) {
	dir := t.TempDir()
	if _, err := ReadStatus(dir); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("ReadStatus of an unfinished job: %v, want ErrNotExist", err)
	}
	s := Status{ExitCode: 3, Error: "boom", ReadySeconds: 1.5, RunSeconds: 2}
	if err := WriteStatus(dir, s); err != nil {
		t.Fatal(err)
	}
	got, err := ReadStatus(dir)
	if err != nil {
		t.Fatal(err)
	}
	if got != s {
		t.Fatalf("got %+v, want %+v", got, s)
	}
	if _, err := os.Stat(filepath.Join(dir, StatusFile+".tmp")); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("temporary file left behind: %v", err)
	}
}

func TestJobValidate(t *testing.T) {
	for _, j := range []Job{{}, {Argv: []string{""}}, {Argv: []string{"relative/x"}}} {
		if err := j.Validate(); err == nil {
			t.Errorf("%+v: accepted", j)
		}
		if err := WriteJob(t.TempDir(), j); err == nil {
			t.Errorf("WriteJob(%+v) accepted an invalid job", j)
		}
	}
}

func TestReadJobBad(t *testing.T) {
	dir := t.TempDir()
	if err := os.WriteFile(filepath.Join(dir, JobFile), []byte("{not json"), 0o644); err != nil {
		t.Fatal(err)
	}
	if _, err := ReadJob(dir); err == nil || !strings.Contains(err.Error(), JobFile) {
		t.Fatalf("ReadJob of bad JSON: %v, want an error naming %s", err, JobFile)
	}
}

// FuzzReadJob: whatever is in job.json, ReadJob either fails or returns a
// job that passes Validate.
func FuzzReadJob(f *testing.F) {
	f.Add([]byte(`{"argv":["/bin/sh","-c","x"],"env":["A=B"]}`))
	f.Add([]byte(`{"argv":[]}`))
	f.Add([]byte(`null`))
	f.Fuzz(func(t *testing.T, b []byte) {
		dir := t.TempDir()
		if err := os.WriteFile(filepath.Join(dir, JobFile), b, 0o644); err != nil {
			t.Fatal(err)
		}
		j, err := ReadJob(dir)
		if err == nil && j.Validate() != nil {
			t.Fatalf("ReadJob accepted %q", b)
		}
	})
}
