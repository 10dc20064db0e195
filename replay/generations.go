package replay

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strconv"
	"strings"
)

// Generations manages the view directories under root (<data>/projections): one
// directory per generation ("g000001", "g000002", ...) and the file CURRENT naming the
// one that serves. A new generation is built beside the current one and swapped in by
// rewriting CURRENT atomically, so a crash mid-rebuild leaves the old views serving; the
// half-built directory is removed by RemoveStale at the next start.
type Generations struct {
	Root string
}

const currentFile = "CURRENT"

// Current returns the name of the serving generation, or "" when there is none yet.
func (g Generations) Current() (string, error) {
	b, err := os.ReadFile(filepath.Join(g.Root, currentFile))
	if errors.Is(err, fs.ErrNotExist) {
		return "", nil
	}
	if err != nil {
		return "", fmt.Errorf("replay: read current generation: %w", err)
	}
	name := strings.TrimSpace(string(b))
	if _, ok := genNumber(name); !ok {
		return "", fmt.Errorf("replay: %s names %q, not a generation", filepath.Join(g.Root, currentFile), name)
	}
	return name, nil
}

// Dir returns the directory of generation name.
func (g Generations) Dir(name string) string { return filepath.Join(g.Root, name) }

// Create makes the directory of a new generation, numbered after every existing one, and
// returns its name. It does not serve until Swap.
func (g Generations) Create() (string, error) {
	if err := os.MkdirAll(g.Root, 0o700); err != nil {
		return "", fmt.Errorf("replay: %w", err)
	}
	names, err := g.list()
	if err != nil {
		return "", err
	}
	next := 1
	for _, n := range names {
		if i, _ := genNumber(n); i >= next {
			next = i + 1
		}
	}
	name := fmt.Sprintf("g%06d", next)
	if err := os.Mkdir(g.Dir(name), 0o700); err != nil {
		return "", fmt.Errorf("replay: create generation: %w", err)
	}
	return name, nil
}

// Swap makes name the serving generation: CURRENT is written to a temporary file, synced
// and renamed over the old one, and the directory is synced.
func (g Generations) Swap(name string) error {
	if _, ok := genNumber(name); !ok {
		return fmt.Errorf("replay: swap to %q: not a generation", name)
	}
	tmp := filepath.Join(g.Root, currentFile+".tmp")
	f, err := os.OpenFile(tmp, os.O_CREATE|os.O_TRUNC|os.O_WRONLY, 0o600)
	if err != nil {
		return fmt.Errorf("replay: swap: %w", err)
	}
	_, err = f.WriteString(name + "\n")
	if err == nil {
		err = f.Sync()
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = os.Rename(tmp, filepath.Join(g.Root, currentFile))
	}
	if err == nil {
		err = syncDir(g.Root)
	}
	if err != nil {
		return fmt.Errorf("replay: swap to %s: %w", name, err)
	}
	return nil
}

// RemoveStale deletes every generation directory except the serving one: old generations
// after a swap, and half-built ones left by a crash.
func (g Generations) RemoveStale() error {
	cur, err := g.Current()
	if err != nil {
		return err
	}
	names, err := g.list()
	if err != nil {
		return err
	}
	for _, n := range names {
		if n != cur {
			if err := os.RemoveAll(g.Dir(n)); err != nil {
				return fmt.Errorf("replay: remove generation %s: %w", n, err)
			}
		}
	}
	return nil
}

func (g Generations) list() ([]string, error) {
	entries, err := os.ReadDir(g.Root)
	if errors.Is(err, fs.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("replay: list generations: %w", err)
	}
	var names []string
	for _, e := range entries {
		if _, ok := genNumber(e.Name()); ok && e.IsDir() {
			names = append(names, e.Name())
		}
	}
	return names, nil
}

func genNumber(name string) (int, bool) {
	if len(name) != 7 || name[0] != 'g' {
		return 0, false
	}
	n, err := strconv.Atoi(name[1:])
	return n, err == nil && n > 0
}

func syncDir(dir string) error {
	d, err := os.Open(dir)
	if err != nil {
		return err
	}
	defer d.Close()
	return d.Sync()
}
