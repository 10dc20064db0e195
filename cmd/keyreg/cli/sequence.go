package cli

import (
	"bytes"
	"encoding/json"
	"os"
	"path/filepath"
	"runtime"
	"strconv"
	"time"

	"github.com/keyreg/keyreg/cmd/keyreg/client"
)

// Read-your-writes between invocations: a write answers with the stream sequence it
// reached, and the command line keeps the last one per server address in a small file,
// sequences.json in the cache directory ($KEYREG_CACHE_DIR, else the user's cache
// directory (os.UserCacheDir) + /keyreg), mode 0600, holding only addresses, sequences
// and times. The next commands to that address send it with their reads (header
// Keyreg-Min-Sequence), so they see the write on whichever node of a cluster answers them;
// --min-seq N sends N instead. Entries older than seqCacheTTL are dropped: a sequence
// is only useful for the moments a cluster's nodes may lag behind one another.

// seqCacheTTL is how long a kept sequence is sent.
const seqCacheTTL = 24 * time.Hour

// seqFile is the name of the file in the cache directory.
const seqFile = "sequences.json"

// seqEntry is the last sequence written to one server address.
type seqEntry struct {
	Seq uint64    `json:"seq"`
	At  time.Time `json:"at"`
}

// carried is a client of a command and the sequence it started from.
type carried struct {
	c    *client.Client
	from uint64
}

// cacheDir returns the directory of the sequence file, "" when there is none: it is
// $KEYREG_CACHE_DIR, else os.UserCacheDir()/keyreg, both read through g.getenv (so that
// a test's environment decides).
func (g *globals) cacheDir() string {
	if d := g.getenv("KEYREG_CACHE_DIR"); d != "" {
		return d
	}
	var base string
	switch runtime.GOOS {
	case "windows":
		base = g.getenv("LocalAppData")
	case "darwin", "ios":
		if h := g.getenv("HOME"); h != "" {
			base = filepath.Join(h, "Library", "Caches")
		}
	case "plan9":
		if h := g.getenv("home"); h != "" {
			base = filepath.Join(h, "lib", "cache")
		}
	default:
		base = g.getenv("XDG_CACHE_HOME")
		if base == "" && g.getenv("HOME") != "" {
			base = filepath.Join(g.getenv("HOME"), ".cache")
		}
	}
	if base == "" || !filepath.IsAbs(base) {
		return ""
	}
	return filepath.Join(base, "keyreg")
}

// readSequences returns the kept sequences by address (none when there is no file or it
// cannot be read: the sequence is a help, never a reason to fail a command).
func readSequences(dir string) map[string]seqEntry {
	m := map[string]seqEntry{}
	if dir == "" {
		return m
	}
	b, err := os.ReadFile(filepath.Join(dir, seqFile))
	if err != nil || json.Unmarshal(b, &m) != nil {
		return map[string]seqEntry{}
	}
	return m
}

// startSequence sets the sequence c starts from: --min-seq when given, else the one kept
// for c's address.
func (g *globals) startSequence(c *client.Client) {
	from := g.minSeq
	if from == 0 {
		if e, ok := readSequences(g.cacheDir())[c.Addr()]; ok && time.Since(e.At) < seqCacheTTL {
			from = e.Seq
		}
	}
	c.ObserveSequence(from)
	g.carried = append(g.carried, carried{c: c, from: from})
}

// sequence returns the highest sequence the command's clients know.
func (g *globals) sequence() uint64 {
	var seq uint64
	for _, t := range g.carried {
		seq = max(seq, t.c.Sequence())
	}
	return seq
}

// saveSequences keeps the sequence of each address whose client saw a new one (a write's
// answer), or forgets it when the server refused it as beyond its stream (the client then
// forgot it). Failing to write the file is not an error of the command.
func (g *globals) saveSequences() {
	dir := g.cacheDir()
	if dir == "" {
		return
	}
	var m map[string]seqEntry
	now := time.Now().UTC()
	for _, t := range g.carried {
		seq := t.c.Sequence()
		if seq == t.from {
			continue
		}
		if m == nil {
			m = readSequences(dir)
		}
		if seq == 0 {
			delete(m, t.c.Addr())
		} else {
			m[t.c.Addr()] = seqEntry{Seq: seq, At: now}
		}
	}
	if m == nil {
		return
	}
	for addr, e := range m {
		if now.Sub(e.At) >= seqCacheTTL {
			delete(m, addr)
		}
	}
	b, err := json.MarshalIndent(m, "", "  ")
	if err != nil || os.MkdirAll(dir, 0o700) != nil {
		return
	}
	tmp, err := os.CreateTemp(dir, seqFile+".*")
	if err != nil {
		return
	}
	_, werr := tmp.Write(append(b, '\n'))
	if cerr := tmp.Close(); werr != nil || cerr != nil || os.Rename(tmp.Name(), filepath.Join(dir, seqFile)) != nil {
		os.Remove(tmp.Name())
	}
}

// printWritten prints a write's answer v as JSON with "sequence" added: the stream
// sequence the change reached, to pass as --min-seq to a read elsewhere.
func (g *globals) printWritten(v any) error {
	var enc bytes.Buffer
	e := json.NewEncoder(&enc)
	e.SetEscapeHTML(false)
	if err := e.Encode(v); err != nil {
		return err
	}
	b := bytes.TrimSpace(enc.Bytes())
	if seq := g.sequence(); seq > 0 && len(b) > 2 && b[0] == '{' && b[len(b)-1] == '}' {
		b = append(b[:len(b)-1], `,"sequence":`+strconv.FormatUint(seq, 10)+`}`...)
	}
	var out bytes.Buffer
	if err := json.Indent(&out, b, "", "  "); err != nil {
		return err
	}
	out.WriteByte('\n')
	_, err := g.stdout.Write(out.Bytes())
	return err
}
