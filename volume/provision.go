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
	// CopyFile copies a user's image file, checked by ValidateImage
	// (--root-copy-from).
	CopyFile
	// MoveFile moves a user's image file, checked by ValidateImage
	// (--root-move-from).
	MoveFile
)

// Source is an existing image a new VM's volume starts from.
type Source struct {
	Path string
	Kind SourceKind
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
	var move string
	for name, src := range sources {
		if _, ok := own[name]; !ok {
			return fmt.Errorf("provision %s: a %s has no %s image of its own (it uses its template's), so it cannot "+
				"be given one from %s; use a %s or %s for that", dir, class, name, src.Path, StandaloneVM, TemplateVM)
		}
		if src.Kind == CopyFile || src.Kind == MoveFile {
			if _, err := ValidateImage(src.Path); err != nil {
				return fmt.Errorf("provision %s: %w", dir, err)
			}
		}
		if src.Kind == MoveFile {
			if move != "" {
				return fmt.Errorf("provision %s: only one image can be moved in (%s and %s)", dir, move, name)
			}
			move = name
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
		if !s.OwnImage() || s.Name == move {
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
		if _, err := Copy(ctx, src.Path, dst, withDefaultLabel(opts, s.Name)...); err != nil {
			return fmt.Errorf("provision %s: %w", dir, err)
		}
		made = append(made, dst)
	}
	if move != "" {
		dst := ImagePath(dir, move)
		if _, err := MoveFrom(ctx, sources[move].Path, dst, withDefaultLabel(opts, move)...); err != nil {
			return fmt.Errorf("provision %s: %w", dir, err)
		}
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
