package model

import "encoding/json"

// Redacted is what a Secret prints as.
const Redacted = "(redacted)"

// Secret is a credential resolved from env() or file(). It prints and
// marshals as "(redacted)"; only Reveal returns the value.
type Secret struct {
	value  string
	source string
}

// NewSecret returns a secret holding value, read from source (for example
// `env("PGPASSWORD")`).
func NewSecret(value, source string) Secret { return Secret{value: value, source: source} }

// Reveal returns the secret's value.
func (s Secret) Reveal() string { return s.value }

// Source says where the value came from, without revealing it.
func (s Secret) Source() string { return s.source }

// IsZero reports whether no secret is set.
func (s Secret) IsZero() bool { return s.value == "" && s.source == "" }

// String returns "(redacted)".
func (s Secret) String() string { return Redacted }

// GoString returns "(redacted)" so that %#v does not leak the value either.
func (s Secret) GoString() string { return Redacted }

// MarshalJSON encodes the secret as "(redacted)".
func (s Secret) MarshalJSON() ([]byte, error) { return json.Marshal(Redacted) }

// MarshalText encodes the secret as "(redacted)".
func (s Secret) MarshalText() ([]byte, error) { return []byte(Redacted), nil }
