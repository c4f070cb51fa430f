package volume

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
)

// SourceKind says where a new VM's image comes from and how it gets there.
type SourceKind int

// The kinds of Source.
const (
	// FromVM copies an image of another VM (qvm-clone; a StandaloneVM made
	// with --template copies the template's root and private).
	FromVM SourceKind = iota
	// Imported places a user's image file opened with OpenImport
	// (--root-copy-from, --root-move-from; see Import.Place).
	Imported
)

// Source is an existing image a new VM's volume starts from.
type Source struct {
	// Path is the image of a FromVM source.
	Path string
	Kind SourceKind
	// Import is the user's image of an Imported source.
	Import *Import
}

// CloneSources returns the images qvm-clone copies from a VM of class whose
// images are in dir: its saved volumes (root and private of a TemplateVM or
// StandaloneVM, private of an AppVM), as Qubes clones save_on_stop volumes.
// The clone's volatile image starts empty. The same map, from a TemplateVM,
// seeds a StandaloneVM created with --template.
func CloneSources(class, dir string) (map[string]Source, error) {
	specs, err := Layout(class)
	if err != nil {
		return nil, err
	}
	src := map[string]Source{}
	for _, s := range specs {
		if s.OwnImage() && s.SaveOnStop {
			src[s.Name] = Source{Path: ImagePath(dir, s.Name), Kind: FromVM}
		}
	}
	return src, nil
}

// Provision creates the images of a new VM of class in dir (made, mode 0700,
// if missing): each image the class owns (Layout) is copied or moved from
// sources[name] when given, else created empty and sparse at its default
// size. Snapshot volumes get no file. It is all-or-nothing: on error,
// including cancellation, everything it made is removed (a moved source is
// moved last, so once it has moved nothing else can fail), and user images
// are validated before anything is made. Options apply to every copy; the
// progress bar is labelled with the volume name unless WithLabel is given.
func Provision(ctx context.Context, dir, class string, sources map[string]Source, opts ...Option) (err error) {
	specs, err := Layout(class)
	if err != nil {
		return fmt.Errorf("provision %s: %w", dir, err)
	}
	own := map[string]Spec{}
	for _, s := range specs {
		if s.OwnImage() {
			own[s.Name] = s
		}
	}
	for name, src := range sources {
		if _, ok := own[name]; !ok {
			what := src.Path
			if src.Import != nil {
				what = src.Import.Path
			}
			return fmt.Errorf("provision %s: a %s has no %s image of its own (it uses its template's), so it cannot "+
				"be given one from %s; use a %s or %s for that", dir, class, name, what, StandaloneVM, TemplateVM)
		}
		if src.Kind == Imported && src.Import == nil {
			return fmt.Errorf("provision %s: the %s image to import is missing", dir, name)
		}
	}

	madeDir := false
	if _, err := os.Stat(dir); errors.Is(err, os.ErrNotExist) {
		if err := os.Mkdir(dir, 0o700); err != nil {
			return fmt.Errorf("provision %s: %w", dir, err)
		}
		madeDir = true
	} else if err != nil {
		return fmt.Errorf("provision %s: %w", dir, err)
	}
	var made []string
	defer func() {
		if err == nil {
			return
		}
		for _, p := range made {
			if rerr := os.Remove(p); rerr != nil && !errors.Is(rerr, os.ErrNotExist) {
				err = errors.Join(err, rerr)
			}
		}
		if madeDir {
			if rerr := os.Remove(dir); rerr != nil {
				err = errors.Join(err, rerr)
			}
		} else if serr := syncDir(dir); serr != nil {
			err = errors.Join(err, serr)
		}
	}()

	for _, s := range specs {
		if !s.OwnImage() {
			continue
		}
		if err := ctx.Err(); err != nil {
			return fmt.Errorf("provision %s: %w", dir, err)
		}
		dst := ImagePath(dir, s.Name)
		src, ok := sources[s.Name]
		if !ok {
			if err := Create(dst, s.Size); err != nil {
				return fmt.Errorf("provision %s: %w", dir, err)
			}
			made = append(made, dst)
			continue
		}
		var err error
		if src.Kind == Imported {
			_, err = src.Import.Place(ctx, dst, withDefaultLabel(opts, s.Name)...)
		} else {
			_, err = Copy(ctx, src.Path, dst, withDefaultLabel(opts, s.Name)...)
		}
		if err != nil {
			return fmt.Errorf("provision %s: %w", dir, err)
		}
		made = append(made, dst)
	}
	if err := syncDir(dir); err != nil {
		return fmt.Errorf("provision %s: %w", dir, err)
	}
	if madeDir {
		if err := syncDir(filepath.Dir(dir)); err != nil {
			return fmt.Errorf("provision %s: %w", dir, err)
		}
	}
	return nil
}

// withDefaultLabel puts a label option first, so that a caller's WithLabel
// (applied later) wins.
func withDefaultLabel(opts []Option, label string) []Option {
	return append([]Option{WithLabel(label)}, opts...)
}
