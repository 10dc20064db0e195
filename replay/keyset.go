package replay

import (
	"fmt"
	"strconv"
	"strings"

	"golang.org/x/mod/sumdb/note"
)

// TrustedKey is a verifier key of an audit key set and, for a retired key, the stream
// sequence of its keyreg.signer.retired.v1 event: the key is vouched for checkpoints of
// trees that do not hold its retirement (size < RetiredSeq). A bare key (RetiredSeq 0) is
// vouched for any. There is no lower bound: a key registered in the log when keyreg first
// recorded signers had signed checkpoints before its registration.
type TrustedKey struct {
	VerifierKey string
	RetiredSeq  uint64
}

// String returns the key's line in a key set file: the key, then " retired=N" when set.
func (k TrustedKey) String() string {
	if k.RetiredSeq != 0 {
		return k.VerifierKey + " retired=" + strconv.FormatUint(k.RetiredSeq, 10)
	}
	return k.VerifierKey
}

// vouches reports whether the key is vouched for a checkpoint of size leaves.
func (k TrustedKey) vouches(size uint64) bool { return k.RetiredSeq == 0 || size < k.RetiredSeq }

// ParseKeySet reads a key set file, as `keyreg audit pubkey` prints it: one verifier key a
// line (golang.org/x/mod/sumdb/note format), optionally followed by "retired=N" (as
// `keyreg audit pubkey --all` prints a retired key); blank lines and lines starting with #
// are skipped. Errors name the line.
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
		if len(fields) > 2 {
			return nil, fmt.Errorf("line %d %q: want a verifier key, then at most retired=N", i+1, line)
		}
		if len(fields) == 2 {
			v, ok := strings.CutPrefix(fields[1], "retired=")
			n, err := strconv.ParseUint(v, 10, 64)
			if !ok || err != nil || n == 0 {
				return nil, fmt.Errorf("line %d: %q: want retired=N, N the stream sequence of the key's retirement", i+1, fields[1])
			}
			k.RetiredSeq = n
		}
		out = append(out, k)
	}
	if len(out) == 0 {
		return nil, fmt.Errorf("no verifier key")
	}
	return out, nil
}
