// Package agent runs application plugins on protected hosts. `lockstep
// agent serve` (Server) hosts the plugins that need local access to an
// application and relays the daemon's plugin calls to them; the daemon
// reaches it through Remote, over mutual TLS with certificates its CA
// (PKI) issued when the agent enrolled (Enroll, Registry). See
// docs/adr/0006-agents.md.
package agent

import (
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"time"

	"github.com/lockstep-io/lockstep/orchestrator/api"
)

// Files of an agent's directory.
const (
	ConfigFile    = "agent.json"
	CertFile      = "agent.crt"
	KeyFile       = "agent.key" // 0600, made on the host, never sent
	AgentCAFile   = "ca.crt"
	PluginsSubdir = "plugins" // vendor plugins (`lockstep plugin install --plugin-dir`)
)

// DefaultListen is where `lockstep agent serve` listens by default.
const DefaultListen = ":7461"

// Metadata keys that route a relayed plugin call (see agent.proto).
const (
	mdPlugin  = "lockstep-plugin"
	mdSHA256  = "lockstep-plugin-sha256"
	mdVersion = "lockstep-plugin-version"
)

// Target names the plugin a relayed call is for, with the policy's pins.
type Target struct {
	Plugin  string
	SHA256  string // empty: not pinned
	Version string // empty: not pinned
}

// Config is an enrolled agent's agent.json.
type Config struct {
	Name          string    `json:"name"`
	Daemon        string    `json:"daemon"`
	Advertise     string    `json:"advertise"`
	Serial        string    `json:"serial"`
	CAFingerprint string    `json:"ca_fingerprint"`
	Enrolled      time.Time `json:"enrolled"`
}

// LoadConfig reads DIR/agent.json.
func LoadConfig(dir string) (Config, error) {
	var c Config
	b, err := os.ReadFile(filepath.Join(dir, ConfigFile))
	if err != nil {
		return c, fmt.Errorf("agent directory %s: %w (enrol it first: `lockstep agent enroll`)", dir, err)
	}
	if err := json.Unmarshal(b, &c); err != nil {
		return c, fmt.Errorf("agent directory %s: %s: %w", dir, ConfigFile, err)
	}
	return c, nil
}

func saveConfig(dir string, c Config) error {
	b, err := json.MarshalIndent(c, "", "  ")
	if err != nil {
		return err
	}
	return api.WriteFileAtomic(filepath.Join(dir, ConfigFile), append(b, '\n'), 0o644)
}
