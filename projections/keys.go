package projections

import (
	"fmt"
	"strconv"
	"strings"

	"github.com/keyreg/keyreg/events"
)

// Key prefixes; see the layout in the package documentation.
const (
	keyCheckpoint      = "meta/checkpoint"
	prefixWorkspace    = "ws/"
	prefixKey          = "key/"
	prefixSecret       = "secret/"
	prefixIdentifier   = "ident/"
	prefixIdentName    = "identname/"
	prefixNameClaim    = "nameclaim/"
	prefixHistory      = "hist/"
	prefixWSHistory    = "wshist/"
	seqDigits          = 20
	identNameSeparator = '\x00'
)

func workspaceKey(ws events.Workspace) []byte { return []byte(prefixWorkspace + string(ws)) }

func keyPrefix(ws events.Workspace) []byte { return []byte(prefixKey + string(ws) + "/") }

func keyKey(ws events.Workspace, id string) []byte {
	return []byte(prefixKey + string(ws) + "/" + id)
}

func secretKey(hash string) []byte { return []byte(prefixSecret + hash) }

func identifierKey(ws events.Workspace, id string) []byte {
	return []byte(prefixIdentifier + string(ws) + "/" + id)
}

// identNamePrefix is the prefix of the name index entries of ws, of kind when kind is set,
// and of folded names starting with folded.
func identNamePrefix(ws events.Workspace, kind events.Kind, folded string) []byte {
	if kind == "" {
		return []byte(prefixIdentName + string(ws) + "/")
	}
	return []byte(prefixIdentName + string(ws) + "/" + string(kind) + "/" + folded)
}

// identNameKey is the name index entry of an active identifier; "" for any other.
func identNameKey(s *events.IdentifierState) string {
	if s.Status != events.StatusActive {
		return ""
	}
	return prefixIdentName + string(s.Workspace) + "/" + string(s.Kind) + "/" +
		events.FoldName(s.Name) + string(identNameSeparator) + s.ID
}

// parseIdentNameKey splits a name index key of workspace prefix p into kind, folded name
// and identifier id.
func parseIdentNameKey(p, key []byte) (kind events.Kind, folded, id string, err error) {
	rest := string(key[len(p):])
	k, rest, ok1 := strings.Cut(rest, "/")
	i := strings.LastIndexByte(rest, identNameSeparator)
	if !ok1 || i < 0 {
		return "", "", "", fmt.Errorf("projections: bad name index key %q", key)
	}
	return events.Kind(k), rest[:i], rest[i+1:], nil
}

func nameClaimKey(ws events.Workspace, claimID string) []byte {
	return []byte(prefixNameClaim + string(ws) + "/" + claimID)
}

func historyPrefix(ws events.Workspace, agg events.Aggregate, id string) []byte {
	return []byte(prefixHistory + string(ws) + "/" + string(agg) + "/" + id + "/")
}

func historyKey(ws events.Workspace, agg events.Aggregate, id string, seq uint64) []byte {
	return appendSeq(historyPrefix(ws, agg, id), seq)
}

func wsHistoryPrefix(ws events.Workspace) []byte {
	return []byte(prefixWSHistory + string(ws) + "/")
}

func wsHistoryKey(ws events.Workspace, seq uint64) []byte {
	return appendSeq(wsHistoryPrefix(ws), seq)
}

// appendSeq appends seq as seqDigits zero-padded decimal digits.
func appendSeq(b []byte, seq uint64) []byte {
	var buf [seqDigits]byte
	for i := len(buf) - 1; i >= 0; i-- {
		buf[i] = byte('0' + seq%10)
		seq /= 10
	}
	return append(b, buf[:]...)
}

// parseSeqSuffix reads the sequence at the end of a history key.
func parseSeqSuffix(key []byte) (uint64, error) {
	if len(key) < seqDigits {
		return 0, fmt.Errorf("projections: bad history key %q", key)
	}
	seq, err := strconv.ParseUint(string(key[len(key)-seqDigits:]), 10, 64)
	if err != nil {
		return 0, fmt.Errorf("projections: bad history key %q", key)
	}
	return seq, nil
}

// prefixEnd returns the smallest key after every key starting with p (p must not be all
// 0xff bytes, which never happens here: every prefix is ASCII).
func prefixEnd(p []byte) []byte {
	end := append([]byte(nil), p...)
	for i := len(end) - 1; i >= 0; i-- {
		if end[i] != 0xff {
			end[i]++
			return end[:i+1]
		}
	}
	return nil
}
