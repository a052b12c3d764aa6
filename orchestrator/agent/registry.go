package agent

import (
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"encoding/pem"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"sort"
	"strings"
	"sync"
	"time"

	"github.com/lockstep-io/lockstep/orchestrator/api"
)

// Errors of the registry. Messages never carry a token.
var (
	ErrTokenRefused = errors.New("agent: enrolment token refused")
	ErrNoAgent      = errors.New("agent: not enrolled")
	ErrExists       = errors.New("agent: already enrolled")
)

// RegistryFile and TokensFile are the registry's files in DATA/agents.
const (
	RegistryFile = "agents.json" // enrolled agents and revoked serials, 0600
	TokensFile   = "tokens.json" // open enrolment tokens, 0600
)

// DefaultTokenTTL is how long an enrolment token is valid; MaxTokenTTL is
// the longest a token may be asked for.
const (
	DefaultTokenTTL = time.Hour
	MaxTokenTTL     = 7 * 24 * time.Hour
)

var nameRE = regexp.MustCompile(`^[a-z0-9]([a-z0-9.-]{0,61}[a-z0-9])?$`)

// CheckName refuses a name that cannot be an agent's (it is also the DNS
// name in its certificate).
func CheckName(name string) error {
	if !nameRE.MatchString(name) {
		return fmt.Errorf("agent name %q: want lower-case letters, digits, '.' and '-', at most 63, as the app's host attribute names it", name)
	}
	return nil
}

// Record is one enrolled agent.
type Record struct {
	Name      string    `json:"name"`
	Advertise string    `json:"advertise"` // host:port the daemon dials
	Serial    string    `json:"serial"`    // of its certificate, hex
	NotAfter  time.Time `json:"not_after"`
	Enrolled  time.Time `json:"enrolled"`
}

type registryFile struct {
	Agents  []Record `json:"agents"`
	Revoked []string `json:"revoked"` // serials refused for ever
}

type tokenRec struct {
	ID      string    `json:"id"`
	Secret  string    `json:"secret"`
	Name    string    `json:"name"`
	Expires time.Time `json:"expires"`
	Replace bool      `json:"replace,omitempty"`
}

// Registry is the daemon's record of enrolled agents, revoked certificate
// serials and open enrolment tokens, in a directory of its own. It is
// safe for concurrent use.
type Registry struct {
	dir string
	pki *PKI
	now func() time.Time

	mu     sync.Mutex
	file   registryFile
	tokens []tokenRec
}

// OpenRegistry opens the registry in dir with the CA pki; now is the
// clock (nil: time.Now).
func OpenRegistry(dir string, pki *PKI, now func() time.Time) (*Registry, error) {
	if now == nil {
		now = time.Now
	}
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, fmt.Errorf("agent registry %s: %w", dir, err)
	}
	r := &Registry{dir: dir, pki: pki, now: now}
	if err := readJSON(filepath.Join(dir, RegistryFile), &r.file); err != nil {
		return nil, err
	}
	if err := readJSON(filepath.Join(dir, TokensFile), &r.tokens); err != nil {
		return nil, err
	}
	return r, nil
}

func readJSON(path string, v any) error {
	b, err := os.ReadFile(path)
	if errors.Is(err, os.ErrNotExist) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("agent registry: %w", err)
	}
	if err := json.Unmarshal(b, v); err != nil {
		return fmt.Errorf("agent registry %s: %w", path, err)
	}
	return nil
}

func writeJSON(path string, v any) error {
	b, err := json.MarshalIndent(v, "", "  ")
	if err != nil {
		return err
	}
	if err := api.WriteFileAtomic(path, append(b, '\n'), 0o600); err != nil {
		return fmt.Errorf("agent registry %s: %w", path, err)
	}
	return nil
}

// PKI is the registry's certificate authority.
func (r *Registry) PKI() *PKI { return r.pki }

// Agents lists the enrolled agents by name.
func (r *Registry) Agents() []Record {
	r.mu.Lock()
	defer r.mu.Unlock()
	out := append([]Record(nil), r.file.Agents...)
	sort.Slice(out, func(i, j int) bool { return out[i].Name < out[j].Name })
	return out
}

// Agent returns the enrolled agent name.
func (r *Registry) Agent(name string) (Record, bool) {
	r.mu.Lock()
	defer r.mu.Unlock()
	for _, a := range r.file.Agents {
		if a.Name == name {
			return a, true
		}
	}
	return Record{}, false
}

// Trusted reports whether serial is the current certificate of agent name
// (not revoked, not replaced).
func (r *Registry) Trusted(name, serial string) bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	for _, s := range r.file.Revoked {
		if s == serial {
			return false
		}
	}
	for _, a := range r.file.Agents {
		if a.Name == name {
			return a.Serial == serial
		}
	}
	return false
}

// NewToken opens a single-use enrolment token for agent name, valid for
// ttl. It refuses a name already enrolled unless replace is set; the
// enrolment then replaces the agent and revokes its old certificate.
func (r *Registry) NewToken(name string, ttl time.Duration, replace bool) (token string, expires time.Time, err error) {
	if err := CheckName(name); err != nil {
		return "", time.Time{}, err
	}
	if ttl <= 0 {
		ttl = DefaultTokenTTL
	}
	if ttl > MaxTokenTTL {
		return "", time.Time{}, fmt.Errorf("enrolment token for agent %q: ttl %s is longer than the %s allowed", name, ttl, MaxTokenTTL)
	}
	if _, ok := r.Agent(name); ok && !replace {
		return "", time.Time{}, fmt.Errorf("agent %q: %w; remove it first (`lockstep agent remove %s`) or ask for a token with --replace", name, ErrExists, name)
	}
	id, secret := make([]byte, 8), make([]byte, 32)
	if _, err := rand.Read(id); err != nil {
		return "", time.Time{}, err
	}
	if _, err := rand.Read(secret); err != nil {
		return "", time.Time{}, err
	}
	t := tokenRec{ID: hex.EncodeToString(id), Secret: hex.EncodeToString(secret), Name: name, Expires: r.now().Add(ttl).UTC(), Replace: replace}
	r.mu.Lock()
	defer r.mu.Unlock()
	tokens := append(r.liveTokens(), t)
	if err := writeJSON(filepath.Join(r.dir, TokensFile), tokens); err != nil {
		return "", time.Time{}, err
	}
	r.tokens = tokens
	return t.ID + "." + t.Secret, t.Expires, nil
}

// liveTokens are the tokens not expired; r.mu held.
func (r *Registry) liveTokens() []tokenRec {
	now := r.now()
	out := []tokenRec{}
	for _, t := range r.tokens {
		if now.Before(t.Expires) {
			out = append(out, t)
		}
	}
	return out
}

// Enroll checks an enrolment request against its token (single use, not
// expired, issued for this name, and a MAC over the request made with the
// token's secret, so the secret itself never travels), signs the agent's
// certificate and records the agent. The token is spent even when signing
// fails afterwards.
func (r *Registry) Enroll(req api.AgentEnrollRequest) (api.AgentEnrollResponse, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	var tok *tokenRec
	live := r.liveTokens()
	rest := live[:0:0]
	for i := range live {
		if live[i].ID == req.TokenID && tok == nil {
			tok = &live[i]
			continue
		}
		rest = append(rest, live[i])
	}
	if tok == nil {
		return api.AgentEnrollResponse{}, fmt.Errorf("%w: unknown, already used or expired; ask for a new one with `lockstep agent token %s`", ErrTokenRefused, req.Name)
	}
	csr := []byte(req.CSR)
	blk, _ := pem.Decode(csr)
	if blk == nil {
		return api.AgentEnrollResponse{}, errors.New("enrolment: the certificate request is not PEM")
	}
	want := EnrollMAC(tok.Secret, req.Name, req.Advertise, blk.Bytes)
	if !hmac.Equal([]byte(want), []byte(strings.ToLower(req.MAC))) {
		// A wrong MAC does not spend the token: whoever sent it does not
		// hold the secret, and must not be able to burn the real agent's.
		return api.AgentEnrollResponse{}, fmt.Errorf("%w: the request is not signed with the token's secret", ErrTokenRefused)
	}
	// Spent from here on, whatever follows.
	if err := writeJSON(filepath.Join(r.dir, TokensFile), rest); err != nil {
		return api.AgentEnrollResponse{}, err
	}
	r.tokens = rest
	if req.Name != tok.Name {
		return api.AgentEnrollResponse{}, fmt.Errorf("%w: it was issued for agent %q, not %q", ErrTokenRefused, tok.Name, req.Name)
	}
	if req.Advertise == "" || !strings.Contains(req.Advertise, ":") {
		return api.AgentEnrollResponse{}, fmt.Errorf("enrolment of agent %q: advertise address %q: want host:port the daemon can dial", req.Name, req.Advertise)
	}
	cert, sn, err := r.pki.IssueAgent(csr, req.Name)
	if err != nil {
		return api.AgentEnrollResponse{}, fmt.Errorf("enrolment of agent %q: %w", req.Name, err)
	}
	c, err := parseCertPEM(cert)
	if err != nil {
		return api.AgentEnrollResponse{}, err
	}
	f := registryFile{Revoked: append([]string{}, r.file.Revoked...)}
	for _, a := range r.file.Agents {
		if a.Name == req.Name {
			if !tok.Replace {
				return api.AgentEnrollResponse{}, fmt.Errorf("agent %q: %w", req.Name, ErrExists)
			}
			f.Revoked = append(f.Revoked, a.Serial)
			continue
		}
		f.Agents = append(f.Agents, a)
	}
	f.Agents = append(f.Agents, Record{Name: req.Name, Advertise: req.Advertise, Serial: sn, NotAfter: c.NotAfter.UTC(), Enrolled: r.now().UTC()})
	if err := writeJSON(filepath.Join(r.dir, RegistryFile), f); err != nil {
		return api.AgentEnrollResponse{}, err
	}
	r.file = f
	return api.AgentEnrollResponse{Name: req.Name, Cert: string(cert), CA: string(r.pki.CAPEM), Serial: sn}, nil
}

// Remove forgets agent name and revokes its certificate.
func (r *Registry) Remove(name string) (Record, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	f := registryFile{Revoked: append([]string{}, r.file.Revoked...)}
	var gone *Record
	for _, a := range r.file.Agents {
		if a.Name == name {
			a := a
			gone = &a
			f.Revoked = append(f.Revoked, a.Serial)
			continue
		}
		f.Agents = append(f.Agents, a)
	}
	if gone == nil {
		return Record{}, fmt.Errorf("agent %q: %w (see `lockstep agents`)", name, ErrNoAgent)
	}
	if err := writeJSON(filepath.Join(r.dir, RegistryFile), f); err != nil {
		return Record{}, err
	}
	r.file = f
	return *gone, nil
}

// EnrollMAC is the proof that an enrolment request was made by the holder
// of a token: HMAC-SHA256 keyed with the token's secret over the agent's
// name, advertised address and certificate request (DER), hex.
func EnrollMAC(secretHex, name, advertise string, csrDER []byte) string {
	m := hmac.New(sha256.New, []byte(secretHex))
	m.Write([]byte("lockstep-enroll-v1\x00" + name + "\x00" + advertise + "\x00"))
	m.Write(csrDER)
	return hex.EncodeToString(m.Sum(nil))
}

// SplitToken splits a token as `lockstep agent token` prints it into its
// public id and its secret.
func SplitToken(token string) (id, secret string, err error) {
	id, secret, ok := strings.Cut(strings.TrimSpace(token), ".")
	if !ok || len(id) != 16 || len(secret) != 64 {
		return "", "", errors.New("enrolment token: not a token printed by `lockstep agent token` (ID.SECRET)")
	}
	return id, secret, nil
}
