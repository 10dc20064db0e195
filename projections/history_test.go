package projections

import (
	"encoding/json"
	"testing"
	"time"

	"github.com/keyreg/keyreg/events"
)

// TestHistoryValueMarshal: the hand-written encoding of history entries is byte for byte
// what json.Marshal writes, for plain and awkward values alike.
func TestHistoryValueMarshal(t *testing.T) {
	times := []time.Time{
		time.Date(2026, 11, 27, 10, 0, 0, 123456000, time.UTC),
		time.Date(2026, 11, 27, 10, 0, 0, 0, time.UTC),
		time.Date(2026, 1, 2, 3, 4, 5, 6, time.FixedZone("x", 3600)),
		{},
		time.Date(10000, 1, 1, 0, 0, 0, 0, time.UTC),
	}
	strs := []string{"", "01JDX3ACTOR", "a\"b", `back\slash`, "<script>&", "tab\there", "é ü 日本", "\u2028", "bad\xffutf8", "\x00"}
	for _, tm := range times {
		for _, s := range strs {
			for _, h := range []historyValue{
				{Type: events.TypeKeyCreated, Actor: s, Time: tm},
				{Type: events.Type(s), Actor: "a", Time: tm, Aggregate: events.Aggregate(s), ID: s},
				{Type: events.TypeAllowlistUpdated, Time: tm, Aggregate: events.AggKey, ID: "01ARZ3NDEKTSV4RRFFQ69G5FAV"},
			} {
				want, wantErr := json.Marshal(h)
				got, err := h.marshal(nil)
				if (err != nil) != (wantErr != nil) || string(got) != string(want) {
					t.Fatalf("marshal(%+v) = %s, %v; json.Marshal = %s, %v", h, got, err, want, wantErr)
				}
			}
		}
	}
}
