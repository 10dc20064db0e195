package cli

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"time"

	"github.com/spf13/cobra"

	"github.com/keyreg/keyreg/cmd/keyreg/client"
	"github.com/keyreg/keyreg/cmd/keyreg/wire"
	"github.com/keyreg/keyreg/events"
)

// watchOptions are the flags of keyreg watch.
type watchOptions struct {
	ws       string
	fromSeq  uint64
	fromTime string
	types    []string
	key      string
	durable  string
	stateDir string
	count    int
}

var durableRE = regexp.MustCompile(`^[A-Za-z0-9_-]{1,64}$`)

func newWatchCmd(g *globals) *cobra.Command {
	o := &watchOptions{}
	cmd := &cobra.Command{
		Use:   "watch -w WS [--from-seq N | --from-time T] [--type T]... [--key ID] [--durable NAME]",
		Short: "Follow a workspace's events as they happen, one line each",
		Long: `Follows a workspace's events over the server's event stream (GET .../events, which needs
keyreg.events.read) and prints one line per event: time, stream sequence, type, aggregate,
actor and a short summary of the change. --json prints one JSON object per line instead:
{"sequence": N, "event": <the CloudEvent as stored>}.

It starts with the next new event, or at --from-seq N (the event with sequence N) or
--from-time T (the first event stored at or after T, RFC 3339). --type (repeatable) and
--key keep only some events. It follows until interrupted (or --count events), and
reconnects by itself, from the last event printed, when the connection drops.

--durable NAME remembers the last event printed in a state file (under --state-dir,
default the user's config dir, keyreg/watch/), so that the next run with the same name and
workspace resumes right after it, whatever --from-seq or --from-time say: nothing missed,
nothing twice (after a crash, at most the last event again).`,
		Example: `  keyreg watch -w acme
  keyreg watch -w acme --from-seq 1 --type keyreg.key.revoked.v1 --type keyreg.key.allowlist_updated.v1
  keyreg watch -w acme --key 01JDX3... --from-time 2026-11-01T00:00:00Z
  keyreg watch -w acme --durable siem --json | ship-to-siem`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			ws, err := g.workspace(o.ws)
			if err != nil {
				return err
			}
			o.ws = ws
			return g.watch(cmd.Context(), cmd, o)
		},
	}
	f := cmd.Flags()
	f.StringVarP(&o.ws, "workspace", "w", "", "workspace id (default $KEYREG_WORKSPACE)")
	f.Uint64Var(&o.fromSeq, "from-seq", 0, "start with the event of this stream `SEQUENCE` (1: the first)")
	f.StringVar(&o.fromTime, "from-time", "", "start with the first event stored at or after this `TIME` (RFC 3339)")
	f.StringSliceVar(&o.types, "type", nil, "only events of this `TYPE`, e.g. keyreg.key.revoked.v1 (repeatable)")
	f.StringVar(&o.key, "key", "", "only the events of this key `ID`")
	f.StringVar(&o.durable, "durable", "", "remember the position under this `NAME` and resume from it next time")
	f.StringVar(&o.stateDir, "state-dir", "", "where --durable positions are kept (default: $XDG_CONFIG_HOME/keyreg/watch or the OS equivalent)")
	f.IntVar(&o.count, "count", 0, "stop after this many events (0: follow until interrupted)")
	cmd.MarkFlagsMutuallyExclusive("from-seq", "from-time")
	return cmd
}

// watchState is a --durable position, kept in a small JSON file.
type watchState struct {
	Workspace string    `json:"workspace"`
	Durable   string    `json:"durable"`
	LastSeq   uint64    `json:"last_seq"`
	UpdatedAt time.Time `json:"updated_at"`
}

// stateFile returns the file of o's durable position.
func (o *watchOptions) stateFile() (string, error) {
	dir := o.stateDir
	if dir == "" {
		base, err := os.UserConfigDir()
		if err != nil {
			return "", fmt.Errorf("--durable: no config dir (%v): pass --state-dir", err)
		}
		dir = filepath.Join(base, "keyreg", "watch")
	}
	return filepath.Join(dir, o.ws+"."+o.durable+".json"), nil
}

func loadState(file string) (*watchState, error) {
	b, err := os.ReadFile(file)
	if errors.Is(err, os.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("--durable state: %w", err)
	}
	var s watchState
	if err := json.Unmarshal(b, &s); err != nil {
		return nil, fmt.Errorf("--durable state %s: %w", file, err)
	}
	return &s, nil
}

// saveState writes s to file atomically (a new file renamed over the old one).
func saveState(file string, s watchState) error {
	if err := os.MkdirAll(filepath.Dir(file), 0o700); err != nil {
		return fmt.Errorf("--durable state: %w", err)
	}
	b, _ := json.Marshal(s)
	tmp := file + ".tmp"
	if err := os.WriteFile(tmp, append(b, '\n'), 0o600); err != nil {
		return fmt.Errorf("--durable state: %w", err)
	}
	if err := os.Rename(tmp, file); err != nil {
		return fmt.Errorf("--durable state: %w", err)
	}
	return nil
}

// watch follows the events, reconnecting after a dropped connection, until ctx ends or
// o.count events were printed.
func (g *globals) watch(ctx context.Context, cmd *cobra.Command, o *watchOptions) error {
	eo := client.EventsOptions{Types: o.types, Key: o.key}
	var file string // the --durable state file
	var openErr error
	eo.OnOpen = func(start uint64) {
		if eo.After != nil {
			return
		}
		// From now or --from-time: pin the start, so that a reconnect, or the next run of
		// a new --durable, misses nothing.
		after := start - 1
		eo.After = &after
		if file != "" {
			openErr = saveState(file, watchState{Workspace: o.ws, Durable: o.durable, LastSeq: after, UpdatedAt: time.Now().UTC()})
		}
	}
	file, err := o.startAt(cmd, &eo)
	if err != nil {
		return err
	}

	addr := firstNonEmpty(g.addr, g.getenv("KEYREG_ADDR"), defaultAddr)
	token := strings.TrimSpace(firstNonEmpty(g.token, g.getenv("KEYREG_TOKEN")))
	c := client.New(addr, token, &http.Client{}) // no timeout: the stream lasts
	printed := 0
	errCount := errors.New("count reached")
	backoff := 250 * time.Millisecond
	for {
		err := c.FollowEvents(ctx, o.ws, eo, func(ev client.StreamEvent) error {
			if openErr != nil {
				return openErr
			}
			if err := g.printEvent(ev); err != nil {
				return err
			}
			seq := ev.Seq
			eo.After = &seq
			if file != "" {
				if err := saveState(file, watchState{Workspace: o.ws, Durable: o.durable, LastSeq: seq, UpdatedAt: time.Now().UTC()}); err != nil {
					return err
				}
			}
			backoff = 250 * time.Millisecond
			if printed++; o.count > 0 && printed >= o.count {
				return errCount
			}
			return nil
		})
		var apiErr *client.Error
		switch {
		case errors.Is(err, errCount):
			return nil
		case ctx.Err() != nil:
			return nil // interrupted: a normal way to stop
		case errors.As(err, &apiErr):
			if apiErr.Status < 500 && apiErr.Status != http.StatusTooManyRequests {
				return err
			}
		case !errors.Is(err, client.ErrStreamEnded) && !errors.Is(err, client.ErrDisconnected):
			return err // cannot print or save the position
		}
		fmt.Fprintf(g.stderr, "keyreg: event stream: %v; reconnecting in %s\n", oneLine(fmt.Sprint(err)), backoff)
		select {
		case <-ctx.Done():
			return nil
		case <-time.After(backoff):
		}
		backoff = min(2*backoff, 10*time.Second)
	}
}

// startAt sets where the stream starts (--from-seq, --from-time, or the position a
// --durable saved) and returns the --durable state file, if any.
func (o *watchOptions) startAt(cmd *cobra.Command, eo *client.EventsOptions) (string, error) {
	switch {
	case cmd.Flags().Changed("from-seq"):
		if o.fromSeq == 0 {
			return "", usagef("--from-seq starts at 1")
		}
		after := o.fromSeq - 1
		eo.After = &after
	case o.fromTime != "":
		t, err := time.Parse(time.RFC3339Nano, o.fromTime)
		if err != nil {
			return "", usagef("--from-time %q: use RFC 3339, e.g. 2026-11-01T00:00:00Z", o.fromTime)
		}
		eo.Since = t
	}
	if o.durable != "" {
		if !durableRE.MatchString(o.durable) {
			return "", usagef("--durable %q: use 1 to 64 letters, digits, '-' or '_'", o.durable)
		}
		file, err := o.stateFile()
		if err != nil {
			return "", err
		}
		st, err := loadState(file)
		if err != nil {
			return "", err
		}
		if st != nil {
			last := st.LastSeq
			eo.After = &last
		}
		return file, nil
	}
	return "", nil
}

// printEvent prints one event: a line, or with --json {"sequence", "event"}.
func (g *globals) printEvent(ev client.StreamEvent) error {
	if g.json {
		b, err := json.Marshal(wire.HistoryEntry{Sequence: ev.Seq, Event: ev.Data})
		if err != nil {
			return err
		}
		_, err = fmt.Fprintf(g.stdout, "%s\n", b)
		return err
	}
	_, err := fmt.Fprintln(g.stdout, eventLine(ev))
	return err
}

// eventLine is the one-line form of an event: time, sequence, type, aggregate, actor and
// summary, separated by two spaces; control characters are shown as '?'.
func eventLine(ev client.StreamEvent) string {
	e, err := events.Decode(ev.Data)
	if err != nil {
		return fmt.Sprintf("-  %d  %s  (undecodable: %v)", ev.Seq, ev.Type, err)
	}
	actor := "by " + firstNonEmpty(e.Actor, "keyreg")
	if e.ActorIP != "" {
		actor += " from " + e.ActorIP
	}
	summary := summarize(e)
	if e.Reason != "" {
		summary += "  reason " + strconv.Quote(e.Reason)
	}
	line := strings.Join([]string{fmtTime(e.Time), strconv.FormatUint(ev.Seq, 10), string(e.Type), e.Subject, actor, summary}, "  ")
	return strings.Map(func(r rune) rune {
		if r < 0x20 || r == 0x7f {
			return '?'
		}
		return r
	}, strings.TrimSpace(line))
}

// summarize says in a few words what an event changed: its payload's summary.
func summarize(e events.Event) string {
	p, err := e.Payload()
	if err != nil {
		return "(" + err.Error() + ")"
	}
	return p.Summary(e.Time)
}
