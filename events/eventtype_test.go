package events

import (
	"encoding/json"
	"reflect"
	"strings"
	"testing"
	"time"

	cloudevents "github.com/cloudevents/sdk-go/v2/event"
)

// folder is what every aggregate state does: fold one event into itself.
type folder interface {
	Apply(seq uint64, data []byte, e Event, p Payload) error
}

// aggregateStates gives, per aggregate, a new state and the type of the event that starts
// the aggregate (folded first, before any other of its events).
var aggregateStates = map[Aggregate]struct {
	state func() folder
	start Type
}{
	AggWorkspace:  {func() folder { return &WorkspaceState{} }, TypeWorkspaceCreated},
	AggKey:        {func() folder { return &KeyState{} }, TypeKeyCreated},
	AggIdentifier: {func() folder { return &IdentifierState{} }, TypeIdentifierRegistered},
	AggName:       {func() folder { return &NameClaimState{} }, TypeNameClaimed},
	AggCheckpoint: {func() folder { return &CheckpointState{} }, TypeCheckpointSealed},
	AggSubscriber: {func() folder { return &SubscriberState{} }, TypeSubscriberAdded},
	AggSigner:     {func() folder { return &SignerState{} }, TypeSignerAdded},
	AggWebhook:    {func() folder { return &WebhookState{} }, TypeWebhookRegistered},
}

// TestEventTypeUnits checks that every type in Types is whole: a row consistent with its
// type, a payload the decoder makes, a fold in its aggregate's state, a change for the
// audit log and the CSV export, a one-line summary for watch, and a CloudEvent that
// round-trips through the encoder, the CloudEvents SDK and the decoder.
func TestEventTypeUnits(t *testing.T) {
	samples := samplePayloads()
	at := time.Date(2026, 11, 27, 17, 11, 24, 120596000, time.UTC)
	seen := map[Type]bool{}
	for typ := range samples {
		if newPayload(typ) == nil {
			t.Errorf("%s has a sample payload but no row in Types", typ)
		}
	}
	for _, x := range Types {
		t.Run(string(x.Type), func(t *testing.T) {
			if seen[x.Type] {
				t.Fatalf("%s is listed twice in Types", x.Type)
			}
			seen[x.Type] = true
			if x.Name != x.Type.Name() || !strings.HasPrefix(string(x.Type), "keyreg."+string(x.Aggregate)+"."+x.Name+".v") {
				t.Fatalf("row %+v: the type is not keyreg.<aggregate>.<name>.vN", x)
			}
			if p := newPayload(x.Type); p == nil || p.EventType() != x.Type || reflect.TypeOf(p).Kind() != reflect.Pointer {
				t.Fatalf("newPayload(%s) = %#v, want a pointer to a payload of that type", x.Type, p)
			}
			p, ok := samples[x.Type]
			if !ok {
				t.Fatalf("no sample payload of %s in samplePayloads", x.Type)
			}
			if p.EventType() != x.Type {
				t.Fatalf("the sample of %s is a %T of type %s", x.Type, p, p.EventType())
			}
			t.Run("Fold", func(t *testing.T) { checkFold(t, x, samples, at) })
			t.Run("Change", func(t *testing.T) { checkChange(t, p) })
			t.Run("Summary", func(t *testing.T) { checkSummary(t, p, at) })
			t.Run("CloudEvent", func(t *testing.T) { checkRoundTrip(t, x, p, at) })
		})
	}
}

// record returns payload p of aggregate x.Aggregate as stored, and its decoded envelope.
func record(t *testing.T, x TypeInfo, p Payload, at time.Time) ([]byte, Event) {
	t.Helper()
	ev, err := NewEvent("acme", x.Aggregate, "01JDX3AGGREGATE00000000000", p, Meta{Actor: "01JDX3ACTOR000000000000000"}, "", at)
	if err != nil {
		t.Fatal(err)
	}
	data, err := ev.Encode()
	if err != nil {
		t.Fatal(err)
	}
	back, err := Decode(data)
	if err != nil {
		t.Fatal(err)
	}
	return data, back
}

// checkFold folds the event that starts the aggregate and then the sample of x.Type into a
// new state of the aggregate: each must apply and move the state to its sequence.
func checkFold(t *testing.T, x TypeInfo, samples map[Type]Payload, at time.Time) {
	agg, ok := aggregateStates[x.Aggregate]
	if !ok {
		t.Fatalf("no state for aggregate %s in aggregateStates", x.Aggregate)
	}
	state := agg.state()
	types := []Type{agg.start}
	if x.Type != agg.start {
		types = append(types, x.Type)
	}
	for i, typ := range types {
		seq := uint64(i + 1)
		data, e := record(t, TypeInfo{Type: typ, Aggregate: x.Aggregate}, samples[typ], at)
		p, err := e.Payload()
		if err != nil {
			t.Fatal(err)
		}
		before := reflect.ValueOf(state).Elem().Interface()
		if err := state.Apply(seq, data, e, p); err != nil {
			t.Fatalf("%T does not fold %s: %v", state, typ, err)
		}
		if v := reflect.ValueOf(state).Elem().FieldByName("Version"); !v.IsValid() || v.Uint() != seq {
			t.Fatalf("%T after %s at %d: version %v", state, typ, seq, v)
		}
		if reflect.DeepEqual(before, reflect.ValueOf(state).Elem().Interface()) {
			t.Fatalf("%T unchanged by %s", state, typ)
		}
	}
}

// checkChange checks the payload's change has a before or an after, encodes, and shows no
// whole hash of the payload (secret and password hashes are shortened or left out).
func checkChange(t *testing.T, p Payload) {
	c := p.Change()
	if c.Before == nil && c.After == nil {
		t.Fatalf("%T has an empty change", p)
	}
	before, after, err := c.JSON()
	if err != nil {
		t.Fatalf("%T: change: %v", p, err)
	}
	for _, s := range []string{before, after} {
		if s != "" && !json.Valid([]byte(s)) || strings.Contains(s, "\n") {
			t.Fatalf("%T: change %q is not one line of JSON", p, s)
		}
	}
	for _, h := range hashes(p) {
		if strings.Contains(before+after, h) {
			t.Fatalf("%T: change %s %s shows the whole hash %s", p, before, after, h)
		}
	}
}

// checkSummary checks the payload's summary is one non-empty line that shows no whole hash.
func checkSummary(t *testing.T, p Payload, at time.Time) {
	s := p.Summary(at)
	if strings.TrimSpace(s) == "" || strings.ContainsAny(s, "\r\n") {
		t.Fatalf("%T: summary %q is not one line", p, s)
	}
	for _, h := range hashes(p) {
		if strings.Contains(s, h) {
			t.Fatalf("%T: summary %q shows the whole hash %s", p, s, h)
		}
	}
}

// hashes returns the values of the payload's fields named ...Hash, except RootHash (the
// public root of the audit tree).
func hashes(p Payload) []string {
	var out []string
	v := reflect.ValueOf(p).Elem()
	for i := range v.NumField() {
		name := v.Type().Field(i).Name
		if strings.HasSuffix(name, "Hash") && name != "RootHash" && v.Field(i).Len() > 12 {
			out = append(out, v.Field(i).String())
		}
	}
	return out
}

// checkRoundTrip encodes the payload as stored, reads it with the CloudEvents SDK, and
// decodes what the SDK writes back into an equal payload of the same type.
func checkRoundTrip(t *testing.T, x TypeInfo, p Payload, at time.Time) {
	data, _ := record(t, x, p, at)
	ce := cloudevents.New()
	if err := json.Unmarshal(data, &ce); err != nil {
		t.Fatalf("the SDK cannot parse %s: %v", data, err)
	}
	if err := ce.Validate(); err != nil || ce.Type() != string(x.Type) {
		t.Fatalf("the SDK reads %s as type %s: %v", data, ce.Type(), err)
	}
	out, err := json.Marshal(ce)
	if err != nil {
		t.Fatal(err)
	}
	e, err := Decode(out)
	if err != nil {
		t.Fatalf("decode %s: %v", out, err)
	}
	back, err := e.Payload()
	if err != nil {
		t.Fatalf("payload of %s: %v", out, err)
	}
	if !reflect.DeepEqual(back, p) {
		t.Fatalf("round trip: %#v, want %#v", back, p)
	}
}
