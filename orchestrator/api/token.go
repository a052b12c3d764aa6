package api

import (
	"crypto/rand"
	"crypto/subtle"
	"encoding/hex"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
)

// LoadOrCreateToken returns the token of the data directory dir, generating
// it on first start. The file is written atomically with mode 0600 and is
// never regenerated while it exists: rotating the token means deleting the
// file and restarting the daemon. A token file others may read is refused,
// because its token may already have leaked.
func LoadOrCreateToken(dir string) (token string, created bool, err error) {
	path := filepath.Join(dir, TokenFile)
	t, err := ReadToken(path)
	if err == nil {
		return t, false, nil
	}
	if !errors.Is(err, os.ErrNotExist) {
		return "", false, err
	}
	b := make([]byte, 32)
	if _, err := rand.Read(b); err != nil {
		return "", false, fmt.Errorf("api token: %w", err)
	}
	t = hex.EncodeToString(b)
	if err := WriteFileAtomic(path, []byte(t+"\n"), 0o600); err != nil {
		return "", false, fmt.Errorf("api token %s: %w", path, err)
	}
	return t, true, nil
}

// ReadToken reads a token file, refusing one that group or others can read.
func ReadToken(path string) (string, error) {
	fi, err := os.Stat(path)
	if err != nil {
		return "", err
	}
	if fi.Mode().Perm()&0o077 != 0 {
		return "", fmt.Errorf("api token %s has mode %#o: others may have read it; delete it and restart `lockstep serve` to make a new one", path, fi.Mode().Perm())
	}
	b, err := os.ReadFile(path)
	if err != nil {
		return "", err
	}
	t := strings.TrimSpace(string(b))
	if t == "" {
		return "", fmt.Errorf("api token %s is empty; delete it and restart `lockstep serve`", path)
	}
	return t, nil
}

// TokenEqual compares a presented token with the real one in constant time.
func TokenEqual(presented, token string) bool {
	return subtle.ConstantTimeCompare([]byte(presented), []byte(token)) == 1
}

// WriteFileAtomic replaces path with b: a temporary file in the same
// directory is written with perm, synced and renamed, and the directory is
// synced, so a crash leaves the old file or the new one, never a torn one.
func WriteFileAtomic(path string, b []byte, perm os.FileMode) error {
	dir := filepath.Dir(path)
	f, err := os.CreateTemp(dir, "."+filepath.Base(path)+".tmp-*")
	if err != nil {
		return err
	}
	tmp := f.Name()
	ok := false
	defer func() {
		if !ok {
			f.Close()
			os.Remove(tmp)
		}
	}()
	if err := f.Chmod(perm); err != nil {
		return err
	}
	if _, err := f.Write(b); err != nil {
		return err
	}
	if err := f.Sync(); err != nil {
		return err
	}
	if err := f.Close(); err != nil {
		return err
	}
	if err := os.Rename(tmp, path); err != nil {
		return err
	}
	ok = true
	d, err := os.Open(dir)
	if err != nil {
		return err
	}
	defer d.Close()
	return d.Sync()
}
