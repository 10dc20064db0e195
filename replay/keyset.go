package replay

import (
	"fmt"
	"strconv"
	"strings"

	"golang.org/x/mod/sumdb/note"
)

// TrustedKey is a verifier key of an audit key set, with the part of the log it is
// vouched for: checkpoints of trees of size T with AddedSeq <= T < RetiredSeq, as the log's
// keyreg.signer.added.v1 and keyreg.signer.retired.v1 events of the key say (0: no bound
// on that side). A bare key has no bounds.
type TrustedKey struct {
	VerifierKey string
	AddedSeq    uint64
	RetiredSeq  uint64
}

// String returns the key's line in a key set file: the key, then " added=N" and
// " retired=N" when set.
func (k TrustedKey) String() string {
	s := k.VerifierKey
	if k.AddedSeq != 0 {
		s += " added=" + strconv.FormatUint(k.AddedSeq, 10)
	}
	if k.RetiredSeq != 0 {
		s += " retired=" + strconv.FormatUint(k.RetiredSeq, 10)
	}
	return s
}

// vouches reports whether the key is vouched for a checkpoint of size leaves.
func (k TrustedKey) vouches(size uint64) bool {
	return size >= k.AddedSeq && (k.RetiredSeq == 0 || size < k.RetiredSeq)
}

// ParseKeySet reads a key set file, as `keyreg audit pubkey` prints it: one verifier key a
// line (golang.org/x/mod/sumdb/note format), optionally followed by "added=N" and
// "retired=N" (as `keyreg audit pubkey --all` prints them); blank lines and lines starting
// with # are skipped. Errors name the line.
func ParseKeySet(text string) ([]TrustedKey, error) {
	var out []TrustedKey
	for i, line := range strings.Split(text, "\n") {
		line = strings.TrimSpace(line)
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		fields := strings.Fields(line)
		k := TrustedKey{VerifierKey: fields[0]}
		if _, err := note.NewVerifier(k.VerifierKey); err != nil {
			return nil, fmt.Errorf("line %d %q: %v: want a verifier key (keyreg+...) a line", i+1, line, err)
		}
		for _, f := range fields[1:] {
			name, v, _ := strings.Cut(f, "=")
			n, err := strconv.ParseUint(v, 10, 64)
			switch {
			case err != nil || n == 0:
				return nil, fmt.Errorf("line %d: %q: want added=N or retired=N, N a stream sequence", i+1, f)
			case name == "added":
				k.AddedSeq = n
			case name == "retired":
				k.RetiredSeq = n
			default:
				return nil, fmt.Errorf("line %d: %q: want added=N or retired=N", i+1, f)
			}
		}
		if k.RetiredSeq != 0 && k.RetiredSeq <= k.AddedSeq {
			return nil, fmt.Errorf("line %d: retired=%d is not after added=%d", i+1, k.RetiredSeq, k.AddedSeq)
		}
		out = append(out, k)
	}
	if len(out) == 0 {
		return nil, fmt.Errorf("no verifier key")
	}
	return out, nil
}
