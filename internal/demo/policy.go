package demo

import (
	"bytes"
	"fmt"
	"strings"
	"text/template"

	"github.com/lockstep-io/lockstep/internal/chain"
	"github.com/lockstep-io/lockstep/orchestrator/api"
	"github.com/lockstep-io/lockstep/policies/model"
	"github.com/lockstep-io/lockstep/policies/parse"
)

// Names the demo policy declares.
const (
	Service = "demo"
	// VolumeName is the volume in the policy; StoreVolume its store name.
	VolumeName  = "db"
	StoreVolume = Service + "/" + VolumeName
	IQN         = "iqn.2026-11.io.lockstep:demo.db"
	// The apps: the host's initiator (the demo's chain), the file system
	// on the volume and the PostgreSQL cluster on that file system.
	AppInitiator = "initiator"
	AppFS        = "fs"
	AppDB        = "db"
)

// PolicyFile is the name the demo policy is applied under.
const PolicyFile = "demo.lockstep.hcl"

// policyTemplate is the demo's policy, the same language a user writes
// (see examples/). Paths are filled in per run.
var policyTemplate = template.Must(template.New("policy").Parse(`# The first-run demo: one PostgreSQL on one Lockstep volume.
service "demo" {
  volume "db" {
    size        = {{.Size}}
    block_size  = 4096
    target_name = {{.IQN}}
  }

  # The demo's iSCSI initiator is qemu-storage-daemon exporting the LUN as a
  # FUSE file under a loop device, and the kernel caches that file's pages:
  # after the volume is rolled back they are stale, so a restore drops them
  # before the file system is mounted again. A host with a kernel initiator
  # has no such layer and needs no such app.
  app "exec" "initiator" {
    volumes = ["db"]
    freeze  = ["true"]
    thaw    = ["true"]
    stop    = ["true"]
    start   = {{.DropCache}}
    health  = ["test", "-s", {{.Export}}]
  }

  # The ext4 file system on the volume: frozen for every marker; at restore,
  # unmounted before the roll, and mounted again after it once the device's
  # cached blocks are dropped (BLKFLSBUF).
  app "fsfreeze" "fs" {
    volumes         = ["db"]
    depends_on      = ["initiator"]
    mountpoints     = [{{.MountPoint}}]
    state_directory = {{.StateDir}}
  }

  # PostgreSQL on that file system: a CHECKPOINT before each marker, the WAL
  # position as evidence; stopped before the file system is unmounted and
  # started after it is mounted again.
  app "postgres" "db" {
    volumes        = ["db"]
    depends_on     = ["fs"]
    dsn            = {{.DSN}}
    data_directory = {{.DataDir}}
    log_file       = {{.LogFile}}
  }

  consistency {
    every              = "1m"
    quiesce_timeout    = "10s"
    on_quiesce_failure = "skip"
  }

  rpo {
    journal = "5m"
  }

  retention {
    journal = "1h"
  }
}
`))

// policyPaths are the per-run values of the policy.
type policyPaths struct {
	Size int64
	// ChainDir is the chain's work directory, which names its FUSE export.
	ChainDir   string
	MountPoint string
	StateDir   string
	SockDir    string
	Port       int
	DataDir    string
	LogFile    string
}

// renderPolicy returns the demo policy for one run.
func renderPolicy(p policyPaths) (string, error) {
	dsn := fmt.Sprintf("host=%s port=%d user=postgres dbname=postgres sslmode=disable", p.SockDir, p.Port)
	var drop []string
	for _, a := range chain.DropExportCacheCommand(p.ChainDir) {
		drop = append(drop, hclString(a))
	}
	var b bytes.Buffer
	err := policyTemplate.Execute(&b, map[string]string{
		"DropCache":  "[" + strings.Join(drop, ", ") + "]",
		"Export":     hclString(chain.ExportFile(p.ChainDir)),
		"Size":       hclString(sizeText(p.Size)),
		"IQN":        hclString(IQN),
		"MountPoint": hclString(p.MountPoint),
		"StateDir":   hclString(p.StateDir),
		"DSN":        hclString(dsn),
		"DataDir":    hclString(p.DataDir),
		"LogFile":    hclString(p.LogFile),
	})
	return b.String(), err
}

// checkPolicy parses the policy as the daemon will, so a broken one fails
// with its diagnostics before anything starts.
func checkPolicy(text string) (*model.Policy, error) {
	res := parse.Parse([]parse.Source{{Filename: PolicyFile, Bytes: []byte(text)}}, parse.Options{})
	if res.Policy != nil && !res.Diagnostics.HasErrors() {
		return res.Policy, nil
	}
	var b bytes.Buffer
	res.WriteDiagnostics(&b, 100, false)
	return nil, fmt.Errorf("demo: the demo policy is invalid:\n%s", b.String())
}

func policySources(text string) []api.Source {
	return []api.Source{{Filename: PolicyFile, Text: text}}
}

// hclString quotes s as an HCL string literal: escapes as in Go, plus the
// template sequences ${ and %{, which a path could contain.
func hclString(s string) string {
	var b strings.Builder
	b.WriteByte('"')
	for i := 0; i < len(s); i++ {
		c := s[i]
		switch {
		case c == '"' || c == '\\':
			b.WriteByte('\\')
			b.WriteByte(c)
		case c == '\n':
			b.WriteString(`\n`)
		case (c == '$' || c == '%') && i+1 < len(s) && s[i+1] == '{':
			b.WriteByte(c)
			b.WriteByte(c)
		default:
			b.WriteByte(c)
		}
	}
	b.WriteByte('"')
	return b.String()
}

// sizeText writes n bytes with the largest binary unit that divides it.
func sizeText(n int64) string {
	switch {
	case n >= 1<<30 && n%(1<<30) == 0:
		return fmt.Sprintf("%dGiB", n>>30)
	case n >= 1<<20 && n%(1<<20) == 0:
		return fmt.Sprintf("%dMiB", n>>20)
	}
	return fmt.Sprintf("%dB", n)
}
