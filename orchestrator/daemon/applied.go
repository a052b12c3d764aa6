package daemon

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"time"

	"github.com/lockstep-io/lockstep/orchestrator/api"
	"github.com/lockstep-io/lockstep/orchestrator/pluginschemas"
	"github.com/lockstep-io/lockstep/plugins/host"
	"github.com/lockstep-io/lockstep/policies/model"
	"github.com/lockstep-io/lockstep/policies/parse"
)

// PolicyFile is where the daemon keeps the applied policy's source files.
// The catalog keeps each applied policy's JSON form for history, but that
// form has its secrets redacted; the daemon needs the sources to resolve
// env() and file() again at every start, so secrets are never stored.
const PolicyFile = "policy.json"

// appliedPolicy is the policy in force.
type appliedPolicy struct {
	Version int          `json:"version"`
	Hash    string       `json:"hash"`
	Time    time.Time    `json:"time"`
	Sources []api.Source `json:"sources"`
	pol     *model.Policy
}

func (a *appliedPolicy) info() *api.PolicyInfo {
	pi := &api.PolicyInfo{Version: a.Version, Hash: a.Hash, Time: a.Time, Files: []string{}}
	for _, s := range a.Sources {
		pi.Files = append(pi.Files, s.Filename)
	}
	return pi
}

// volume returns the policy volume with store name name, or nil.
func (a *appliedPolicy) volume(name string) *model.Volume {
	if a == nil || a.pol == nil {
		return nil
	}
	for _, s := range a.pol.Services {
		for _, v := range s.Volumes {
			if VolumeName(s.Name, v.Name) == name {
				return v
			}
		}
	}
	return nil
}

// parseSources resolves policy sources in the daemon's environment, against
// the built-in plugins and those installed in dataDir/plugins (whose pins
// must match). The rendered diagnostics (warnings too) come back as text;
// pol is nil when any is an error.
func parseSources(dataDir string, srcs []api.Source) (pol *model.Policy, diags string) {
	ps := make([]parse.Source, len(srcs))
	for i, s := range srcs {
		ps[i] = parse.Source{Filename: s.Filename, Bytes: []byte(s.Text)}
	}
	m := host.NewManager(filepath.Join(dataDir, "plugins"), host.Options{})
	schemas := pluginschemas.New(m)
	res := parse.Parse(ps, parse.Options{Plugins: schemas})
	var b bytes.Buffer
	if len(res.Diagnostics) > 0 {
		res.WriteDiagnostics(&b, 100, false)
	}
	pol = res.Policy
	problems := schemas.Problems()
	if pol != nil {
		problems = append(problems, pluginschemas.Verify(context.Background(), pol, m)...)
	}
	for _, err := range problems {
		fmt.Fprintf(&b, "Error: %v\n", err)
		pol = nil
	}
	return pol, b.String()
}

// hashSources identifies a policy by its files' names and contents.
func hashSources(srcs []api.Source) string {
	s := append([]api.Source(nil), srcs...)
	sort.Slice(s, func(i, j int) bool { return s[i].Filename < s[j].Filename })
	h := sha256.New()
	for _, x := range s {
		fmt.Fprintf(h, "%d:%s%d:%s", len(x.Filename), x.Filename, len(x.Text), x.Text)
	}
	return hex.EncodeToString(h.Sum(nil))
}

// loadApplied reads the applied policy of dir; nil when none was applied.
func loadApplied(dir string) (*appliedPolicy, error) {
	path := filepath.Join(dir, PolicyFile)
	b, err := os.ReadFile(path)
	if errors.Is(err, os.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("applied policy: %w", err)
	}
	var a appliedPolicy
	if err := json.Unmarshal(b, &a); err != nil {
		return nil, fmt.Errorf("applied policy %s is damaged: %w", path, err)
	}
	pol, diags := parseSources(dir, a.Sources)
	if pol == nil {
		return nil, fmt.Errorf("the applied policy (version %d, %s) no longer resolves; env() secrets come from the daemon's environment and file() secrets from its file system. Fix that, or start with --policy DIR to apply a new one:\n%s", a.Version, path, diags)
	}
	a.pol = pol
	return &a, nil
}

// saveApplied makes a the applied policy of dir, atomically.
func saveApplied(dir string, a *appliedPolicy) error {
	b, err := json.MarshalIndent(a, "", "  ")
	if err != nil {
		return err
	}
	if err := api.WriteFileAtomic(filepath.Join(dir, PolicyFile), b, 0o600); err != nil {
		return fmt.Errorf("applied policy: %w", err)
	}
	return nil
}

func removeApplied(dir string) error {
	err := os.Remove(filepath.Join(dir, PolicyFile))
	if errors.Is(err, os.ErrNotExist) {
		return nil
	}
	return err
}
