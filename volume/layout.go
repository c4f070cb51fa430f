package volume

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
)

// VM classes, as Qubes names them.
const (
	AdminVM      = "AdminVM"
	AppVM        = "AppVM"
	TemplateVM   = "TemplateVM"
	StandaloneVM = "StandaloneVM"
	DispVM       = "DispVM"
)

// Pool names shown by Info: Qubes' file pool and its kernel pool.
const (
	FilePool   = "varlibqubes"
	KernelPool = "linux-kernel"
)

// Spec is a volume of a VM class, as Qubes configures it.
type Spec struct {
	Name string
	// RW: the VM may write to it (all but kernel).
	RW bool
	// SnapOnStart: the volume is a snapshot of the template's volume of the
	// same name, taken at each start (an AppVM's root; a DispVM's root and
	// private). It has no image of its own.
	SnapOnStart bool
	// SaveOnStop: what the VM writes is kept when it stops (the VM's own
	// persistent image: root of a TemplateVM or StandaloneVM, private).
	SaveOnStop bool
	// Size is the default size of an image the VM owns; 0 for snapshot and
	// kernel volumes, whose size comes from elsewhere.
	Size int64
}

// OwnImage reports whether the volume is an image file of the VM itself
// (created with the VM, removed with it).
func (s Spec) OwnImage() bool { return s.Name != Kernel && !s.SnapOnStart }

// Layout returns the volumes of a VM class in disk order (root xvda,
// private xvdb, volatile xvdc, kernel xvdd), with Qubes' defaults:
//
//	class          root                  private               volatile
//	TemplateVM     own 10 GiB, saved     own 2 GiB, saved      own 10 GiB
//	StandaloneVM   own 10 GiB, saved     own 2 GiB, saved      own 10 GiB
//	AppVM          template's snapshot   own 2 GiB, saved      own 10 GiB
//	DispVM         template's snapshot   template's snapshot   own 12 GiB
//
// Volatile is never saved (recreated empty at each start). AdminVM (dom0)
// has no volumes.
func Layout(class string) ([]Spec, error) {
	kernel := Spec{Name: Kernel}
	switch class {
	case TemplateVM, StandaloneVM:
		return []Spec{
			{Name: Root, RW: true, SaveOnStop: true, Size: DefaultRootSize},
			{Name: Private, RW: true, SaveOnStop: true, Size: DefaultPrivateSize},
			{Name: Volatile, RW: true, Size: DefaultVolatileSize},
			kernel,
		}, nil
	case AppVM:
		return []Spec{
			{Name: Root, RW: true, SnapOnStart: true},
			{Name: Private, RW: true, SaveOnStop: true, Size: DefaultPrivateSize},
			{Name: Volatile, RW: true, Size: DefaultVolatileSize},
			kernel,
		}, nil
	case DispVM:
		return []Spec{
			{Name: Root, RW: true, SnapOnStart: true},
			{Name: Private, RW: true, SnapOnStart: true},
			{Name: Volatile, RW: true, Size: DispVMVolatileSize},
			kernel,
		}, nil
	case AdminVM:
		return nil, nil
	}
	return nil, fmt.Errorf("unknown VM class %q: use one of %s, %s, %s, %s", class, AppVM, TemplateVM, StandaloneVM, DispVM)
}

// specOf finds one volume of a class.
func specOf(class, name string) (Spec, error) {
	specs, err := Layout(class)
	if err != nil {
		return Spec{}, err
	}
	names := make([]string, 0, len(specs))
	for _, s := range specs {
		if s.Name == name {
			return s, nil
		}
		names = append(names, s.Name)
	}
	if len(names) == 0 {
		return Spec{}, fmt.Errorf("a %s has no volumes", class)
	}
	return Spec{}, fmt.Errorf("a %s has no volume %q: its volumes are %s", class, name, strings.Join(names, ", "))
}

// VM is what Describe needs to know about a VM.
type VM struct {
	Name  string
	Class string
	// Dir is the directory holding the VM's images.
	Dir string
	// Kernel is the VM's kernel property ("" = boot from its own disk) and
	// KernelsDir the directory holding one subdirectory per kernel.
	Kernel, KernelsDir string
	// Template is the VM's template (an AppVM's TemplateVM, a DispVM's
	// AppVM, which has its own template); nil when it has none.
	Template *VM
}

// Info is what `qvm-volume info VM:VOLUME` shows about a volume, with
// Qubes' meaning for each field.
type Info struct {
	// Name is the volume's name in its VM (root, private, ...); it is not
	// one of qvm-volume info's rows.
	Name string
	Pool string // FilePool, or KernelPool for the kernel volume
	// VID identifies the volume in its pool: "vm-templates/NAME/VOLUME" for
	// a TemplateVM, "appvms/NAME/VOLUME" for the others, the kernel
	// version for the kernel volume.
	VID string
	// Path is the image file the VM sees (for a snapshot, its source's).
	Path string
	RW   bool
	// Source is the VID of the volume a snapshot is taken from ("" if not
	// a snapshot), following the template chain to a volume that is not
	// itself a snapshot (a DispVM's root comes from the TemplateVM).
	Source      string
	SaveOnStop  bool
	SnapOnStart bool
	// Size is the volume's size in bytes; Usage the bytes it takes on disk
	// (st_blocks * 512; 0 for a snapshot, which exists only while running).
	Size, Usage int64
	// RevisionsToKeep is 0: qvm keeps no revisions (Qubes' file pool keeps
	// one for saved volumes), so there is never anything to revert to.
	RevisionsToKeep int
	Ephemeral       bool
	IsOutdated      bool
	Revisions       []string
}

// infoKeys are Info's fields in the order qvm-volume info prints them.
var infoKeys = []string{"pool", "vid", "rw", "source", "save_on_stop", "snap_on_start",
	"size", "usage", "revisions_to_keep", "ephemeral", "is_outdated"}

// Fields returns (name, value) rows as `qvm-volume info VM:VOLUME` prints
// them (Python's str() of each value: True/False, "" for no source,
// "-1 (snapshot disabled)" for revisions_to_keep -1).
func (in Info) Fields() [][2]string {
	rows := make([][2]string, 0, len(infoKeys))
	for _, k := range infoKeys {
		v, _ := in.Property(k)
		if k == "revisions_to_keep" && in.RevisionsToKeep == -1 {
			v = "-1 (snapshot disabled)"
		}
		rows = append(rows, [2]string{k, v})
	}
	return rows
}

// Property returns one value as `qvm-volume info VM:VOLUME PROP` prints it;
// "revisions" gives one revision per line.
func (in Info) Property(name string) (string, error) {
	switch name {
	case "pool":
		return in.Pool, nil
	case "vid":
		return in.VID, nil
	case "rw":
		return pyBool(in.RW), nil
	case "source":
		return in.Source, nil
	case "save_on_stop":
		return pyBool(in.SaveOnStop), nil
	case "snap_on_start":
		return pyBool(in.SnapOnStart), nil
	case "size":
		return strconv.FormatInt(in.Size, 10), nil
	case "usage":
		return strconv.FormatInt(in.Usage, 10), nil
	case "revisions_to_keep":
		return strconv.Itoa(in.RevisionsToKeep), nil
	case "ephemeral":
		return pyBool(in.Ephemeral), nil
	case "is_outdated":
		return pyBool(in.IsOutdated), nil
	case "revisions":
		return strings.Join(in.Revisions, "\n"), nil
	}
	return "", fmt.Errorf("no such property: %s (known: %s, revisions)", name, strings.Join(infoKeys, ", "))
}

func pyBool(b bool) string {
	if b {
		return "True"
	}
	return "False"
}

// VID is a volume's identifier in the file pool, as Qubes forms it.
func VID(vmName, class, volume string) string {
	prefix := "appvms"
	if class == TemplateVM {
		prefix = "vm-templates"
	}
	return prefix + "/" + vmName + "/" + volume
}

// Describe gathers Info for one volume of vm from the files on disk.
func Describe(vm VM, volume string) (Info, error) {
	spec, err := specOf(vm.Class, volume)
	if err != nil {
		return Info{}, fmt.Errorf("volume %s:%s: %w", vm.Name, volume, err)
	}
	in := Info{Name: volume, RW: spec.RW, SnapOnStart: spec.SnapOnStart, SaveOnStop: spec.SaveOnStop}
	switch {
	case volume == Kernel:
		in.Pool, in.VID = KernelPool, vm.Kernel
		if vm.Kernel != "" && vm.KernelsDir != "" {
			in.Path = filepath.Join(vm.KernelsDir, vm.Kernel, "modules.img")
		}
		return in, nil
	case spec.SnapOnStart:
		src, err := snapshotSource(vm, volume)
		if err != nil {
			return Info{}, err
		}
		in.Pool, in.VID = FilePool, VID(vm.Name, vm.Class, volume)
		in.Source = VID(src.Name, src.Class, volume)
		in.Path = ImagePath(src.Dir, volume)
		u, err := Stat(in.Path)
		if err != nil {
			return Info{}, fmt.Errorf("volume %s:%s: the image of its source %s:%s: %w", vm.Name, volume, src.Name, volume, err)
		}
		in.Size = u.Size
		return in, nil
	}
	in.Pool, in.VID = FilePool, VID(vm.Name, vm.Class, volume)
	in.Path = ImagePath(vm.Dir, volume)
	u, err := Stat(in.Path)
	switch {
	case err == nil:
		in.Size, in.Usage = u.Size, u.Allocated
	case !spec.SaveOnStop && errors.Is(err, os.ErrNotExist):
		// A volatile image may be absent between runs: it is recreated
		// empty at each start.
		in.Size = spec.Size
	default:
		return Info{}, fmt.Errorf("volume %s:%s: %w (the VM's storage is damaged: restore the image from a backup or remove the VM)", vm.Name, volume, err)
	}
	return in, nil
}

// snapshotSource follows vm's template chain to the first VM whose volume
// of that name is not a snapshot.
func snapshotSource(vm VM, volume string) (*VM, error) {
	for t := vm.Template; t != nil; t = t.Template {
		s, err := specOf(t.Class, volume)
		if err != nil {
			return nil, fmt.Errorf("volume %s:%s: its template %s: %w", vm.Name, volume, t.Name, err)
		}
		if !s.SnapOnStart {
			return t, nil
		}
	}
	return nil, fmt.Errorf("volume %s:%s is a snapshot of its template's, but %s (%s) has no template", vm.Name, volume, vm.Name, vm.Class)
}

// DescribeAll gathers Info for every volume of vm, in disk order (what
// `qvm-volume list VM` shows); nil for dom0, which has none.
func DescribeAll(vm VM) ([]Info, error) {
	specs, err := Layout(vm.Class)
	if err != nil {
		return nil, fmt.Errorf("volumes of %s: %w", vm.Name, err)
	}
	infos := make([]Info, 0, len(specs))
	for _, s := range specs {
		in, err := Describe(vm, s.Name)
		if err != nil {
			return nil, err
		}
		infos = append(infos, in)
	}
	return infos, nil
}

// ResizeVolume grows a volume of vm to newSize bytes, as
// `qvm-volume resize VM:VOLUME SIZE` does: only the VM's own writable images
// can be resized (not the kernel, not a snapshot of the template's volume),
// and only upwards (see Resize).
func ResizeVolume(vm VM, volume string, newSize int64) error {
	spec, err := specOf(vm.Class, volume)
	if err != nil {
		return fmt.Errorf("resize volume %s:%s: %w", vm.Name, volume, err)
	}
	switch {
	case !spec.RW:
		return fmt.Errorf("resize volume %s:%s: it is read-only (a kernel volume has no size of its own)", vm.Name, volume)
	case spec.SnapOnStart:
		tpl := "its template"
		if src, err := snapshotSource(vm, volume); err == nil {
			tpl = src.Name
		}
		return fmt.Errorf("resize volume %s:%s: it is a snapshot of %s's %s volume, taken at each start; "+
			"resize that instead: qvm-volume resize %s:%s SIZE", vm.Name, volume, tpl, volume, tpl, volume)
	}
	if err := Resize(ImagePath(vm.Dir, volume), newSize); err != nil {
		return fmt.Errorf("resize volume %s:%s: %w", vm.Name, volume, err)
	}
	return nil
}
