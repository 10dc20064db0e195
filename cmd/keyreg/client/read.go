package client

import (
	"net/url"
	"strconv"
	"time"
)

// ReadOption changes what a read of keys or identifiers returns (GetKey, ListKeys,
// KeysPage, GetIdentifier, ListIdentifiers, IdentifiersPage).
type ReadOption func(*readOptions)

type readOptions struct {
	asOf string // the as_of parameter; "": now
}

// AsOf reads the state as it was at a moment: at (an RFC 3339 time, or a stream sequence
// in decimal) as the server's as_of parameter takes it; "" reads the state now. A key or
// identifier that did not exist yet then is a 404 *Error.
func AsOf(at string) ReadOption { return func(o *readOptions) { o.asOf = at } }

// AsOfSeq reads the state as it was at stream sequence seq, every event up to it
// applied: AsOf(seq in decimal).
func AsOfSeq(seq uint64) ReadOption { return AsOf(strconv.FormatUint(seq, 10)) }

// AsOfTime reads the state as it was at t: AsOf(t in RFC 3339).
func AsOfTime(t time.Time) ReadOption { return AsOf(t.Format(time.RFC3339Nano)) }

// readValues adds the parameters of opts to v (nil: a new set) and returns it.
func readValues(v url.Values, opts []ReadOption) url.Values {
	var o readOptions
	for _, opt := range opts {
		opt(&o)
	}
	if v == nil {
		v = url.Values{}
	}
	if o.asOf != "" {
		v.Set("as_of", o.asOf)
	}
	return v
}
