package bench

import (
	"bufio"
	"context"
	"crypto/rand"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/keyreg/keyreg/cmd/keyreg/client"
	"github.com/keyreg/keyreg/cmd/keyreg/server"
	"github.com/keyreg/keyreg/commands"
	"github.com/keyreg/keyreg/events"
	"github.com/keyreg/keyreg/projections/verifier"
)

// MillionOptions size a run of Million.
type MillionOptions struct {
	Keys     int    // keys to build; 0 means 1,000,000
	Binary   string // the keyreg binary whose serve is measured; "" means this executable
	Dir      string // a new or empty directory for the data dir
	Verifies int    // HTTP verifies measured; 0 means 20,000
	Clients  int    // concurrent verify clients; 0 means 16
	// Progress, when set, gets a line now and then while the keys are built.
	Progress io.Writer
}

// Figure is one figure of Million: what was measured, its value and unit.
type Figure struct {
	What  string
	Value float64
	Unit  string
}

// PrintFigure writes a figure as one line, `<what> ... <value> <unit>`.
func PrintFigure(w io.Writer, f Figure) {
	v := strconv.FormatFloat(f.Value, 'f', 1, 64)
	if f.Value == float64(int64(f.Value)) {
		v = strconv.FormatInt(int64(f.Value), 10)
	}
	fmt.Fprintf(w, "%-58s %14s %s\n", f.What, v, f.Unit)
}

// keysPerWorkspace is how many keys Million puts in each workspace, under the default
// quota (commands.DefaultMaxKeysPerWorkspace).
const keysPerWorkspace = 1000

// millionBatch is how many key.created events Million appends in one atomic batch.
const millionBatch = 100

// verifySamples bounds how many secrets Million keeps to verify with.
const verifySamples = 10_000

// Million builds opts.Keys keys in a fresh data dir through the log (atomic batches of
// key.created events appended to the KEYREG stream with the expectations CreateKey sets),
// then measures a real `keyreg serve` child process on it: its first start, which builds
// the views from the stream (a replay), its resident memory (VmRSS, VmHWM of
// /proc/PID/status), HTTP verify latency, the start-up of an embedded verifier
// (projections/verifier) from the stream's first event and from the server's snapshot, and
// a second start on the existing views. It fails if the server does not verify every key
// it is asked about.
func Million(ctx context.Context, opts MillionOptions, report func(Figure)) error {
	if opts.Keys <= 0 {
		opts.Keys = 1_000_000
	}
	if opts.Verifies <= 0 {
		opts.Verifies = 20_000
	}
	if opts.Clients <= 0 {
		opts.Clients = 16
	}
	if opts.Binary == "" {
		exe, err := os.Executable()
		if err != nil {
			return err
		}
		opts.Binary = exe
	}
	m := &million{ctx: ctx, opts: opts, report: report, data: filepath.Join(opts.Dir, "data")}
	last, err := m.build()
	if err != nil {
		return fmt.Errorf("build %d keys: %w", opts.Keys, err)
	}
	// First start: the views are built from the stream.
	s, took, err := m.serve()
	if err != nil {
		return err
	}
	defer s.kill()
	report(Figure{fmt.Sprintf("replay: first start to ready, views built (%d events)", last), took.Seconds(), "s"})
	report(Figure{"replay: events applied per second", float64(last) / took.Seconds(), "events/s"})
	m.memory(s, "first start, ready")
	if err := m.verify(s); err != nil {
		return err
	}
	m.memory(s, "first start, after verifies")
	if err := m.verifiers(s); err != nil {
		return err
	}
	if err := m.stop(s); err != nil {
		return err
	}
	// Second start, on the views the first left.
	s, took, err = m.serve()
	if err != nil {
		return err
	}
	defer s.kill()
	report(Figure{"restart to ready, existing views", took.Seconds(), "s"})
	m.memory(s, "restart, ready")
	if err := m.verify(s); err != nil {
		return err
	}
	m.memory(s, "restart, after verifies")
	return m.stop(s)
}

// million is one run of Million.
type million struct {
	ctx     context.Context
	opts    MillionOptions
	report  func(Figure)
	data    string
	root    string   // the root secret, from the first start
	secrets []string // a sample of the keys' secrets
}

// build appends the keys to the stream of a fresh data dir and returns the stream's last
// sequence. Each workspace is made with a CreateWorkspace command; its keys go in atomic
// batches whose first event expects the workspace's last key.created (as CreateKey under
// the quota does) and whose others expect their new key to have no event.
func (m *million) build() (uint64, error) {
	ctx, cancel := context.WithCancel(m.ctx)
	defer cancel()
	n := m.opts.Keys
	s, err := server.OpenStream(ctx, server.Config{DataDir: m.data})
	if err != nil {
		return 0, err
	}
	defer s.Close()
	spaces := (n + keysPerWorkspace - 1) / keysPerWorkspace
	h := &commands.Handler{Log: events.NewGroupLog(s.Log)}
	start := time.Now()
	if err := parallel(spaces, 16, func(i int) error {
		_, err := h.CreateWorkspace(ctx, commands.CreateWorkspace{Workspace: millionWorkspace(i), Name: "million"})
		return err
	}); err != nil {
		return 0, err
	}
	stride := max(n/verifySamples, 1)
	var mu sync.Mutex
	var done int
	err = parallel(spaces, 4, func(w int) error {
		ws := events.Workspace(millionWorkspace(w))
		keys := min(keysPerWorkspace, n-w*keysPerWorkspace)
		var lastCreated uint64
		for b := 0; b < keys; b += millionBatch {
			msgs, secrets, err := keyBatch(ws, w*keysPerWorkspace+b, min(millionBatch, keys-b), stride, lastCreated)
			if err != nil {
				return err
			}
			seqs, err := appendRetrying(ctx, s.Log, msgs)
			if err != nil {
				cancel() // the other workers stop too
				return err
			}
			lastCreated = seqs[len(seqs)-1]
			mu.Lock()
			m.secrets = append(m.secrets, secrets...)
			done += len(msgs)
			if m.opts.Progress != nil && done%(100*millionBatch*10) == 0 {
				fmt.Fprintf(m.opts.Progress, "  %d keys appended in %s\n", done, time.Since(start).Round(time.Second))
			}
			mu.Unlock()
		}
		return nil
	})
	if err != nil {
		return 0, err
	}
	took := time.Since(start)
	m.report(Figure{fmt.Sprintf("build: keys appended (%d workspaces, atomic batches of %d)", spaces, millionBatch), float64(n), "keys"})
	m.report(Figure{"build: keys appended per second", float64(n) / took.Seconds(), "keys/s"})
	return s.Log.LastSeq(ctx)
}

// appendRetrying appends msgs, waiting up to a minute for each try, and tries again after
// an error other than a conflict (a timeout on a loaded machine): a batch whose first
// event is stored already is recognized and not stored twice (events.Appender).
func appendRetrying(ctx context.Context, log events.Appender, msgs []events.Message) ([]uint64, error) {
	for try := 1; ; try++ {
		actx, cancel := context.WithTimeout(ctx, time.Minute)
		seqs, err := log.Append(actx, msgs)
		cancel()
		if err == nil || errors.Is(err, events.ErrConflict) || ctx.Err() != nil || try == 5 {
			return seqs, err
		}
	}
}

// millionWorkspace is the name of Million's workspace i.
func millionWorkspace(i int) string { return fmt.Sprintf("million-%05d", i) }

// keyBatch makes the key.created events of keys first … first+count-1 of workspace ws, and
// returns them with the secrets of the keys whose number is a multiple of stride. The
// first event expects lastCreated to be the workspace's last key.created.
func keyBatch(ws events.Workspace, first, count, stride int, lastCreated uint64) ([]events.Message, []string, error) {
	msgs := make([]events.Message, count)
	var secrets []string
	now := time.Now()
	for j := range msgs {
		var random [32]byte
		rand.Read(random[:])
		secret := events.FormatSecret(random)
		if (first+j)%stride == 0 {
			secrets = append(secrets, secret)
		}
		id := events.NewID()
		e, err := events.NewEvent(ws, events.AggKey, id, &events.KeyCreated{
			Name: fmt.Sprint("key ", first+j), Permissions: []events.Permission{"users.track"},
			Allowlist: []netip.Prefix{netip.MustParsePrefix("10.0.0.0/8")}, SecretHash: events.HashSecret(secret),
		}, events.Meta{}, "", now)
		if err != nil {
			return nil, nil, err
		}
		data, err := e.Encode()
		if err != nil {
			return nil, nil, err
		}
		msgs[j] = events.Message{Subject: events.Subject(ws, events.AggKey, id, e.Type), ID: e.ID, Data: data,
			ExpectFilter: events.AggregateFilter(ws, events.AggKey, id)}
	}
	msgs[0].ExpectFilter, msgs[0].ExpectSeq = events.Subject(ws, events.AggKey, "*", events.TypeKeyCreated), lastCreated
	return msgs, secrets, nil
}

// served is a running `keyreg serve` child process.
type served struct {
	cmd    *exec.Cmd
	url    string
	exited chan struct{}
	err    error // of Wait, once exited
	out    *lockedBuffer
}

// serve starts `keyreg serve` on the data dir and returns it once /readyz answers 200,
// with the time that took.
func (m *million) serve() (*served, time.Duration, error) {
	keyFile := filepath.Join(m.opts.Dir, "root.key")
	start := time.Now()
	cmd := exec.Command(m.opts.Binary, "serve", "--data", m.data, "--http", "127.0.0.1:0", "--nats-listen", "127.0.0.1:0",
		"--bootstrap-key-file", keyFile)
	out := &lockedBuffer{} // its log: the address it serves on (http=...), and errors
	cmd.Stdout, cmd.Stderr = out, out
	if err := cmd.Start(); err != nil {
		return nil, 0, fmt.Errorf("start %s serve: %w", m.opts.Binary, err)
	}
	s := &served{cmd: cmd, exited: make(chan struct{}), out: out}
	go func() { s.err = cmd.Wait(); close(s.exited) }()
	ctx, cancel := context.WithTimeout(m.ctx, time.Hour)
	defer cancel()
	for {
		if s.url == "" {
			if _, after, ok := strings.Cut(out.String(), "http="); ok {
				addr, _, _ := strings.Cut(after, " ")
				s.url = "http://" + strings.TrimSpace(addr)
			}
		}
		if s.url != "" {
			if resp, err := http.Get(s.url + "/readyz"); err == nil {
				resp.Body.Close()
				if resp.StatusCode == http.StatusOK {
					break
				}
			}
		}
		select {
		case <-s.exited:
			return nil, 0, fmt.Errorf("keyreg serve ended before it was ready: %v\n%s", s.err, out.String())
		case <-ctx.Done():
			s.kill()
			return nil, 0, fmt.Errorf("keyreg serve not ready: %w\n%s", ctx.Err(), out.String())
		case <-time.After(20 * time.Millisecond):
		}
	}
	took := time.Since(start)
	if m.root == "" {
		b, err := os.ReadFile(keyFile)
		if err != nil {
			s.kill()
			return nil, 0, fmt.Errorf("root secret: %w", err)
		}
		m.root = strings.TrimSpace(string(b))
	}
	return s, took, nil
}

// kill ends the child at once, if it still runs.
func (s *served) kill() {
	select {
	case <-s.exited:
	default:
		s.cmd.Process.Kill()
		<-s.exited
	}
}

// stop sends the child SIGTERM, waits for it to exit cleanly and reports how long that
// took (it writes the verify snapshot on its way out).
func (m *million) stop(s *served) error {
	start := time.Now()
	s.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-s.exited:
	case <-time.After(5 * time.Minute):
		s.kill()
		return errors.New("keyreg serve did not stop within 5 minutes of SIGTERM")
	}
	if s.err != nil {
		return fmt.Errorf("keyreg serve: %v\n%s", s.err, s.out.String())
	}
	m.report(Figure{"shutdown (SIGTERM to exit, verify snapshot written)", time.Since(start).Seconds(), "s"})
	return nil
}

// memory reports the child's resident memory now and at its peak.
func (m *million) memory(s *served, when string) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", s.cmd.Process.Pid))
	if err != nil {
		return // not Linux: no figure
	}
	sc := bufio.NewScanner(strings.NewReader(string(b)))
	for sc.Scan() {
		name, rest, _ := strings.Cut(sc.Text(), ":")
		if name != "VmRSS" && name != "VmHWM" {
			continue
		}
		kb, _ := strconv.ParseFloat(strings.TrimSuffix(strings.TrimSpace(rest), " kB"), 64)
		m.report(Figure{fmt.Sprintf("serve %s (%s)", name, when), kb / 1024, "MB"})
	}
}

// verify sends opts.Verifies POST /v1/verify requests for sampled keys from opts.Clients
// clients, and reports their rate and latency. Every answer must be VALID.
func (m *million) verify(s *served) error {
	c := client.New(s.url, m.root, &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: m.opts.Clients}})
	lat := make([]time.Duration, m.opts.Verifies)
	start := time.Now()
	err := parallel(m.opts.Verifies, m.opts.Clients, func(i int) error {
		t := time.Now()
		r, err := c.Verify(m.ctx, m.secrets[(i*7919)%len(m.secrets)], "10.1.2.3", "users.track")
		lat[i] = time.Since(t)
		if err == nil && !r.Valid {
			err = fmt.Errorf("verify answered %s", r.Code)
		}
		return err
	})
	if err != nil {
		return fmt.Errorf("verify: %w", err)
	}
	took := time.Since(start)
	slices.Sort(lat)
	m.report(Figure{fmt.Sprintf("verify over HTTP, %d clients: keys verified VALID", m.opts.Clients), float64(len(lat)), "verifies"})
	m.report(Figure{"verify over HTTP: rate", float64(len(lat)) / took.Seconds(), "verifies/s"})
	m.report(Figure{"verify over HTTP: p50", float64(lat[len(lat)/2].Microseconds()) / 1000, "ms"})
	m.report(Figure{"verify over HTTP: p99", float64(lat[len(lat)*99/100].Microseconds()) / 1000, "ms"})
	return nil
}

// verifiers measures the start-up of an embedded verifier connected as a confined
// subscriber, reading the stream from its first event and then from the server's
// snapshot, and checks both know every key.
func (m *million) verifiers(s *served) error {
	ctx, cancel := context.WithTimeout(m.ctx, 30*time.Minute)
	defer cancel()
	c := client.New(s.url, m.root, nil)
	sub, err := c.AddSubscriber(ctx, "million", 2, client.WriteOptions{})
	if err != nil {
		return fmt.Errorf("add subscriber: %w", err)
	}
	nc, err := nats.Connect(sub.NATSURL, nats.UserInfo("million", sub.Password), nats.CustomInboxPrefix(events.InboxPrefix("million")))
	if err != nil {
		return err
	}
	defer nc.Close()
	// The server writes its first snapshot once caught up; the subscriber's addition
	// came after it, which the verifier then reads from the stream.
	if err := waitSnapshot(ctx, nc); err != nil {
		return err
	}
	for _, from := range []struct {
		what       string
		noSnapshot bool
		consumer   string
	}{{"from sequence 1", true, "million-1"}, {"from the server's snapshot", false, "million-2"}} {
		runtime.GC()
		var notes []string
		start := time.Now()
		v, err := verifier.Start(ctx, nc, verifier.Options{ConsumerName: from.consumer, NoSnapshot: from.noSnapshot,
			OnError: func(err error) { notes = append(notes, err.Error()) }})
		if err != nil {
			return fmt.Errorf("embedded verifier %s: %w", from.what, err)
		}
		took := time.Since(start)
		keys, snap := v.Keys(), v.StartedFrom()
		v.Close()
		if keys < m.opts.Keys {
			return fmt.Errorf("embedded verifier %s knows %d keys, want %d at least", from.what, keys, m.opts.Keys)
		}
		if !from.noSnapshot && snap == 0 {
			return fmt.Errorf("embedded verifier did not start from a snapshot: %s", strings.Join(notes, "; "))
		}
		m.report(Figure{fmt.Sprintf("embedded verifier start-up, %s (%d keys)", from.what, keys), took.Seconds(), "s"})
	}
	return nil
}

// waitSnapshot waits until the server has written a snapshot.
func waitSnapshot(ctx context.Context, nc *nats.Conn) error {
	js, err := jetstream.New(nc)
	if err != nil {
		return err
	}
	for {
		if _, ok := verifier.LatestSnapshot(ctx, js); ok {
			return nil
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("no verify snapshot from the server: %w", ctx.Err())
		case <-time.After(200 * time.Millisecond):
		}
	}
}

// lockedBuffer is a bytes buffer safe for a writer and a reader goroutine.
type lockedBuffer struct {
	mu  sync.Mutex
	buf []byte
}

func (b *lockedBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.buf = append(b.buf, p...)
	return len(p), nil
}

func (b *lockedBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return string(b.buf)
}
