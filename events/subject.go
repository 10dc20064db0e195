package events

import (
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"strings"
)

// StreamName is the JetStream stream that holds every event.
const StreamName = "KEYREG"

// SubjectPrefix is the first token of every subject; the stream takes "keyreg.>".
const SubjectPrefix = "keyreg"

// Subject returns the NATS subject "keyreg.<ws>.<aggregate>.<id>.<event>" of an event.
func Subject(ws Workspace, agg Aggregate, id string, t Type) string {
	return SubjectPrefix + "." + string(ws) + "." + string(agg) + "." + id + "." + t.Name()
}

// AggregateFilter returns "keyreg.<ws>.<aggregate>.<id>.*", the subject filter of every
// event of one aggregate, used for reads and the optimistic-concurrency check.
func AggregateFilter(ws Workspace, agg Aggregate, id string) string {
	return SubjectPrefix + "." + string(ws) + "." + string(agg) + "." + id + ".*"
}

// WorkspaceFilter returns "keyreg.<ws>.>".
func WorkspaceFilter(ws Workspace) string { return SubjectPrefix + "." + string(ws) + ".>" }

// ParsedSubject is a subject split into its tokens.
type ParsedSubject struct {
	Workspace Workspace
	Aggregate Aggregate
	ID        string
	Event     string
}

// ParseSubject splits "keyreg.<ws>.<aggregate>.<id>.<event>".
func ParseSubject(s string) (ParsedSubject, error) {
	parts := strings.Split(s, ".")
	if len(parts) != 5 || parts[0] != SubjectPrefix {
		return ParsedSubject{}, fmt.Errorf("events: bad subject %q", s)
	}
	return ParsedSubject{Workspace(parts[1]), Aggregate(parts[2]), parts[3], parts[4]}, nil
}

// NameClaimID is the id of the AggName aggregate that claims a name of a kind: the kind and
// a hash of the folded name, so any name fits one subject token.
func NameClaimID(kind Kind, foldedName string) string {
	h := sha256.Sum256([]byte(foldedName))
	return string(kind) + "-" + hex.EncodeToString(h[:16])
}
