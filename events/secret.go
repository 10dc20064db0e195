package events

import (
	"crypto/sha256"
	"encoding/hex"
	"hash/crc32"
	"math/big"
	"strings"
)

// Secret format: "kr_" + 43 base62 characters (32 random bytes) + 6 base62 characters of
// CRC-32 over the preceding characters. The prefix lets secret scanners find leaked keys;
// the checksum rejects malformed or mistyped secrets without a lookup.
const (
	SecretPrefix   = "kr_"
	secretBodyLen  = 43
	secretCheckLen = 6
	// SecretLen is the length of every well-formed secret.
	SecretLen = len(SecretPrefix) + secretBodyLen + secretCheckLen
)

const base62 = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"

// FormatSecret turns 32 random bytes into a secret. Callers pass bytes from crypto/rand.
func FormatSecret(random [32]byte) string {
	body := encodeBase62(new(big.Int).SetBytes(random[:]), secretBodyLen)
	sum := crc32.ChecksumIEEE([]byte(SecretPrefix + body))
	return SecretPrefix + body + encodeBase62(new(big.Int).SetUint64(uint64(sum)), secretCheckLen)
}

// WellFormedSecret reports whether s has the prefix, length, alphabet and checksum of a
// secret. It does not allocate.
func WellFormedSecret(s string) bool {
	if len(s) != SecretLen || !strings.HasPrefix(s, SecretPrefix) {
		return false
	}
	var check uint64
	for i := 0; i < len(s)-len(SecretPrefix); i++ {
		c := s[len(SecretPrefix)+i]
		v := base62Value(c)
		if v < 0 {
			return false
		}
		if i >= secretBodyLen {
			check = check*62 + uint64(v)
		}
	}
	return check == uint64(crc32.Update(0, crc32.IEEETable, unsafeBytes(s[:len(SecretPrefix)+secretBodyLen])))
}

// SecretDigest returns SHA-256 of the secret; the log and the views keep only this.
func SecretDigest(s string) [32]byte { return sha256.Sum256(unsafeBytes(s)) }

// HashSecret returns the hex SHA-256 of the secret, as carried by events.
func HashSecret(s string) string {
	d := SecretDigest(s)
	return hex.EncodeToString(d[:])
}

func base62Value(c byte) int {
	switch {
	case c >= '0' && c <= '9':
		return int(c - '0')
	case c >= 'A' && c <= 'Z':
		return int(c-'A') + 10
	case c >= 'a' && c <= 'z':
		return int(c-'a') + 36
	}
	return -1
}

func encodeBase62(n *big.Int, width int) string {
	b := make([]byte, width)
	base, mod := big.NewInt(62), new(big.Int)
	for i := width - 1; i >= 0; i-- {
		n.DivMod(n, base, mod)
		b[i] = base62[mod.Int64()]
	}
	return string(b)
}
