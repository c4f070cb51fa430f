// Package hostjob is the file protocol between a host and the init of a VM
// over a directory they share (a 9p share in the end-to-end test bed): the
// host writes a job (a command to run) into the directory, the VM's init
// runs it and writes the command's output and exit status back.
//
// Layout of the shared directory:
//
//	job.json        the Job, written by the host before the VM boots
//	out/output      the command's stdout and stderr, appended as it runs
//	out/status.json the Status, written once when the command has ended
package hostjob

import (
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
)

// File names inside the shared directory.
const (
	JobFile    = "job.json"
	OutDir     = "out"
	OutputFile = "out/output"
	StatusFile = "out/status.json"
)

// Job is the command the VM runs.
type Job struct {
	// Argv is the command and its arguments; Argv[0] is a path in the VM.
	Argv []string `json:"argv"`
	// Env is added to the VM init's environment (KEY=VALUE).
	Env []string `json:"env,omitempty"`
	// Dir is the working directory in the VM (default: the share's mount point).
	Dir string `json:"dir,omitempty"`
}

// Status is how the job ended.
type Status struct {
	// ExitCode is the command's exit status (128+N if killed by signal N);
	// -1 if it could not be started.
	ExitCode int `json:"exit_code"`
	// Error says why the command could not be run, if it could not.
	Error string `json:"error,omitempty"`
	// ReadySeconds is the VM's uptime when its init was ready to run the
	// job; RunSeconds is how long the job ran.
	ReadySeconds float64 `json:"ready_seconds"`
	RunSeconds   float64 `json:"run_seconds"`
}

// Validate checks that a job can be run.
func (j Job) Validate() error {
	if len(j.Argv) == 0 || j.Argv[0] == "" {
		return errors.New("job has no command: argv is empty")
	}
	if !filepath.IsAbs(j.Argv[0]) {
		return fmt.Errorf("job command %q is not an absolute path in the VM", j.Argv[0])
	}
	return nil
}

// WriteJob writes j into the shared directory dir.
func WriteJob(dir string, j Job) error {
	if err := j.Validate(); err != nil {
		return err
	}
	return writeJSON(filepath.Join(dir, JobFile), j)
}

// ReadJob reads and validates the job in the shared directory dir.
func ReadJob(dir string) (Job, error) {
	var j Job
	if err := readJSON(filepath.Join(dir, JobFile), &j); err != nil {
		return j, err
	}
	return j, j.Validate()
}

// WriteStatus writes the job's status into the shared directory dir.
func WriteStatus(dir string, s Status) error {
	if err := os.MkdirAll(filepath.Join(dir, OutDir), 0o755); err != nil {
		return fmt.Errorf("write job status: %w", err)
	}
	return writeJSON(filepath.Join(dir, StatusFile), s)
}

// ReadStatus reads the job's status from the shared directory dir; the
// error wraps os.ErrNotExist if the job never finished.
func ReadStatus(dir string) (Status, error) {
	var s Status
	err := readJSON(filepath.Join(dir, StatusFile), &s)
	return s, err
}

func writeJSON(path string, v any) error {
	b, err := json.MarshalIndent(v, "", "  ")
	if err != nil {
		return fmt.Errorf("encode %s: %w", path, err)
	}
	tmp := path + ".tmp"
	f, err := os.Create(tmp)
	if err != nil {
		return err
	}
	if _, err := f.Write(append(b, '\n')); err != nil {
		f.Close()
		return fmt.Errorf("write %s: %w", tmp, err)
	}
	if err := f.Sync(); err != nil {
		f.Close()
		return fmt.Errorf("sync %s: %w", tmp, err)
	}
	if err := f.Close(); err != nil {
		return fmt.Errorf("close %s: %w", tmp, err)
	}
	if err := os.Rename(tmp, path); err != nil {
		return err
	}
	return nil
}

func readJSON(path string, v any) error {
	b, err := os.ReadFile(path)
	if err != nil {
		return err
	}
	if err := json.Unmarshal(b, v); err != nil {
		return fmt.Errorf("parse %s: %w", path, err)
	}
	return nil
}
