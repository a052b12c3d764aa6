// Package login implements the iSCSI login phase of a target (RFC 7143
// sections 6 and 13): text key=value parsing, operational parameter
// negotiation, CHAP authentication (RFC 1994, MD5) and the stage machine
// that decides when a connection may enter full feature phase. It performs
// no I/O, so the whole exchange can be fuzzed.
package login

import (
	"errors"
	"fmt"
	"strings"
)

// KV is one key=value pair in the order it appeared.
type KV struct{ Key, Value string }

// Limits on text keys (RFC 7143 section 6.1).
const (
	maxKeyLen   = 63
	maxValueLen = 8192
	maxPairs    = 256
)

// ErrText reports a malformed text data segment.
var ErrText = errors.New("login: malformed text data")

// ParseText splits a text data segment into its pairs. Duplicate keys and
// pairs without '=' are errors; a trailing NUL is optional.
func ParseText(b []byte) ([]KV, error) {
	s := string(b)
	s = strings.TrimRight(s, "\x00")
	if s == "" {
		return nil, nil
	}
	parts := strings.Split(s, "\x00")
	if len(parts) > maxPairs {
		return nil, fmt.Errorf("%w: %d pairs, limit %d", ErrText, len(parts), maxPairs)
	}
	out := make([]KV, 0, len(parts))
	seen := make(map[string]bool, len(parts))
	for _, p := range parts {
		k, v, ok := strings.Cut(p, "=")
		if !ok || k == "" {
			return nil, fmt.Errorf("%w: pair %q has no key", ErrText, trunc(p))
		}
		if len(k) > maxKeyLen || len(v) > maxValueLen {
			return nil, fmt.Errorf("%w: key %q or its value too long", ErrText, trunc(k))
		}
		if seen[k] {
			return nil, fmt.Errorf("%w: key %q repeated", ErrText, trunc(k))
		}
		seen[k] = true
		out = append(out, KV{k, v})
	}
	return out, nil
}

// EncodeText joins pairs into a data segment, each terminated by NUL.
func EncodeText(kvs []KV) []byte {
	var b strings.Builder
	for _, kv := range kvs {
		b.WriteString(kv.Key)
		b.WriteByte('=')
		b.WriteString(kv.Value)
		b.WriteByte(0)
	}
	return []byte(b.String())
}

func trunc(s string) string {
	if len(s) > 64 {
		return s[:64] + "..."
	}
	return s
}
