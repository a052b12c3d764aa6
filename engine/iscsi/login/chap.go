package login

import (
	"crypto/md5"
	"crypto/rand"
	"crypto/subtle"
	"encoding/base64"
	"encoding/hex"
	"errors"
	"fmt"
	"strings"
)

// MinSecretLen is the shortest CHAP secret accepted (RFC 7143 section
// 12.1.3 requires at least 96 bits for secrets that are not random).
const MinSecretLen = 12

// CHAP holds a target's CHAP credentials. Secrets never appear in errors or
// String output.
type CHAP struct {
	// Username and Secret authenticate the initiator to the target.
	Username, Secret string
	// MutualUsername and MutualSecret authenticate the target to the
	// initiator when the initiator asks for it; empty disables mutual CHAP.
	MutualUsername, MutualSecret string
}

// String hides the secrets.
func (c *CHAP) String() string { return fmt.Sprintf("CHAP{user %q}", c.Username) }

// Validate checks the secret lengths and that the two directions differ.
func (c *CHAP) Validate() error {
	if c.Username == "" || len(c.Secret) < MinSecretLen {
		return fmt.Errorf("login: CHAP needs a username and a secret of at least %d bytes", MinSecretLen)
	}
	if c.MutualSecret != "" || c.MutualUsername != "" {
		if c.MutualUsername == "" || len(c.MutualSecret) < MinSecretLen {
			return fmt.Errorf("login: mutual CHAP needs a username and a secret of at least %d bytes", MinSecretLen)
		}
		if c.MutualSecret == c.Secret {
			return errors.New("login: mutual CHAP secret must differ from the initiator secret")
		}
	}
	return nil
}

// ChapResponse computes MD5(id || secret || challenge) (RFC 1994).
func ChapResponse(id byte, secret string, challenge []byte) []byte {
	h := md5.New()
	h.Write([]byte{id})
	h.Write([]byte(secret))
	h.Write(challenge)
	return h.Sum(nil)
}

// DecodeBinary decodes a CHAP binary value (0x hex or 0b base64).
func DecodeBinary(v string) ([]byte, error) {
	switch {
	case strings.HasPrefix(v, "0x") || strings.HasPrefix(v, "0X"):
		s := v[2:]
		if len(s)%2 == 1 {
			s = "0" + s
		}
		return hex.DecodeString(s)
	case strings.HasPrefix(v, "0b") || strings.HasPrefix(v, "0B"):
		return base64.StdEncoding.DecodeString(v[2:])
	}
	return nil, fmt.Errorf("%w: binary value without 0x or 0b prefix", ErrText)
}

// EncodeHex encodes a binary value as 0x hex.
func EncodeHex(b []byte) string { return "0x" + hex.EncodeToString(b) }

func randomBytes(n int) []byte {
	b := make([]byte, n)
	if _, err := rand.Read(b); err != nil {
		panic(err) // crypto/rand never fails on supported platforms
	}
	return b
}

func constEqual(a, b []byte) bool { return subtle.ConstantTimeCompare(a, b) == 1 }
