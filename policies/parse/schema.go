package parse

import "github.com/hashicorp/hcl/v2"

// blockSpec declares one block of the policy language. The hcl.BodySchema
// used for decoding and the reference documentation are both derived from
// these tables, so the two cannot drift apart.
type blockSpec struct {
	Type     string
	Labels   []string
	Doc      string
	Required bool   // must appear (once) in its parent
	Multiple bool   // may appear more than once
	Reserved string // non-empty: recognised but not supported yet; the reason
	Attrs    []attrSpec
	Blocks   []*blockSpec
	// PluginBody marks the app block, whose other attributes belong to the plugin.
	PluginBody bool
}

// attrSpec declares one attribute of a block.
type attrSpec struct {
	Name     string
	Type     string // as written in the reference: string, duration, size, secret, ...
	Required bool
	Default  string // as written in the reference; empty when none
	Doc      string
	Reserved string
}

var chapSpec = &blockSpec{
	Type: "chap",
	Doc:  "iSCSI CHAP authentication for the volume's target (RFC 7143). Secrets must come from `env()` or `file()`.",
	Attrs: []attrSpec{
		{Name: "username", Type: "string", Required: true, Doc: "The CHAP name initiators authenticate with."},
		{Name: "secret", Type: "secret", Required: true, Doc: "The CHAP secret: at least 12 bytes; more than 16 draws a warning, since some initiators refuse them."},
		{Name: "mutual_username", Type: "string", Doc: "The name the target authenticates with for mutual CHAP; set together with `mutual_secret`."},
		{Name: "mutual_secret", Type: "secret", Doc: "The mutual CHAP secret, sized like `secret` and different from it."},
	},
}

var volumeSpec = &blockSpec{
	Type:     "volume",
	Labels:   []string{"name"},
	Multiple: true,
	Doc:      "A block device of the service, journaled and served over iSCSI. A volume belongs to exactly one service.",
	Attrs: []attrSpec{
		{Name: "size", Type: "size", Required: true, Doc: "Capacity with a unit: `B`, `KiB`, `MiB`, `GiB`, `TiB`, `PiB` (or decimal `KB`, `MB`, `GB`, `TB`, `PB`). A multiple of `block_size`."},
		{Name: "block_size", Type: "number", Default: "512", Doc: "Logical block size in bytes: 512 or 4096."},
		{Name: "target_name", Type: "string", Default: "iqn.2026-11.io.lockstep:<service>.<volume>", Doc: "The iSCSI target name (IQN or EUI). The default lowercases the names and replaces characters outside `[a-z0-9.-]` with `-`. Two volumes may not share a target name."},
		{Name: "initiators", Type: "list(string)", Default: "[] (any initiator)", Doc: "IQNs of the initiators allowed to log in."},
	},
	Blocks: []*blockSpec{chapSpec},
}

var appSpec = &blockSpec{
	Type:       "app",
	Labels:     []string{"plugin", "name"},
	Multiple:   true,
	PluginBody: true,
	Doc:        "An application of the service, quiesced by the plugin named by the first label. The host decodes `volumes` and `depends_on`; every other attribute belongs to the plugin and is checked against its schema (see Plugins below).",
	Attrs: []attrSpec{
		{Name: "volumes", Type: "list(string)", Default: "[]", Doc: "Names of the volumes of the same service this app writes to."},
		{Name: "depends_on", Type: "list(string)", Default: "[]", Doc: "Names of apps of the same service this app needs (a database before the app server that uses it). Apps start after what they depend on and stop before it; cycles are an error."},
	},
}

var consistencySpec = &blockSpec{
	Type:     "consistency",
	Required: true,
	Doc:      "When application-consistent markers are taken. Set exactly one of `schedule` and `every`.",
	Attrs: []attrSpec{
		{Name: "schedule", Type: "cron", Doc: "A cron expression (5 fields, an optional leading seconds field, or a descriptor such as `@hourly`; `CRON_TZ=Zone` prefix allowed)."},
		{Name: "every", Type: "duration", Doc: "A fixed interval between markers, at least 1s."},
		{Name: "quiesce_timeout", Type: "duration", Default: "10s", Doc: "How long apps may stay frozen before the marker is given up on and everything thaws."},
		{Name: "on_quiesce_failure", Type: "string", Default: "crash_consistent", Doc: "`crash_consistent` takes the marker anyway and records it as crash-consistent; `skip` takes no marker."},
	},
}

var rpoSpec = &blockSpec{
	Type:     "rpo",
	Required: true,
	Doc:      "Recovery point objective: the longest acceptable age of the newest application-consistent marker, per tier. It must not be shorter than the longest gap between two markers of the schedule.",
	Attrs: []attrSpec{
		{Name: "journal", Type: "duration", Required: true, Doc: "RPO of the journal tier."},
		{Name: "cloud", Type: "duration", Reserved: "the cloud tier is not implemented yet", Doc: "RPO of the cloud tier (reserved)."},
		{Name: "tape", Type: "duration", Reserved: "the tape tier is not implemented yet", Doc: "RPO of the tape tier (reserved)."},
	},
}

var retentionSpec = &blockSpec{
	Type: "retention",
	Doc:  "How long history is kept: every write for the `journal` window, then the markers chosen by the `keep_*` rules.",
	Attrs: []attrSpec{
		{Name: "journal", Type: "duration", Default: "72h", Doc: "Every write is kept this long; not shorter than `rpo.journal`."},
		{Name: "keep_hourly", Type: "number", Default: "0", Doc: "Keep the newest marker of each of this many most recent hours."},
		{Name: "keep_daily", Type: "number", Default: "0", Doc: "Keep the newest marker of each of this many most recent days."},
		{Name: "keep_weekly", Type: "number", Default: "0", Doc: "Keep the newest marker of each of this many most recent weeks."},
		{Name: "keep_monthly", Type: "number", Default: "0", Doc: "Keep the newest marker of each of this many most recent months."},
		{Name: "keep_yearly", Type: "number", Default: "0", Doc: "Keep the newest marker of each of this many most recent years."},
	},
}

var copySpec = &blockSpec{
	Type:     "copy",
	Labels:   []string{"tier"},
	Multiple: true,
	Reserved: "copies to the cloud and tape tiers are not implemented yet",
	Doc:      "A copy of the service to a further tier (`cloud` or `tape`). Reserved.",
}

var serviceSpec = &blockSpec{
	Type:     "service",
	Labels:   []string{"name"},
	Multiple: true,
	Doc:      "The atomic unit of protection: volumes that share one marker timestamp and the apps quiesced for it.",
	Blocks:   []*blockSpec{volumeSpec, appSpec, consistencySpec, rpoSpec, retentionSpec, copySpec},
}

var pluginSpec = &blockSpec{
	Type:     "plugin",
	Labels:   []string{"name"},
	Multiple: true,
	Doc:      "Declares a plugin that apps name in their first label. Built-in plugins need no declaration.",
	Attrs: []attrSpec{
		{Name: "source", Type: "string", Required: true, Doc: "`builtin`, or the path of the plugin binary (relative to the policy file)."},
		{Name: "sha256", Type: "string", Doc: "Hex SHA-256 of the plugin binary; recommended for every non-builtin plugin."},
		{Name: "version", Type: "string", Doc: "The plugin version this policy was written for."},
	},
}

var cloudSpec = &blockSpec{
	Type:     "cloud",
	Labels:   []string{"name"},
	Multiple: true,
	Reserved: "the cloud tier is not implemented yet",
	Doc:      "An S3-compatible object store for the cloud tier. Reserved.",
}

var tapeLibrarySpec = &blockSpec{
	Type:     "tape_library",
	Labels:   []string{"name"},
	Multiple: true,
	Reserved: "the tape tier is not implemented yet",
	Doc:      "A tape library for the tape tier. Reserved.",
}

// rootSpec is the top level of a policy file.
var rootSpec = &blockSpec{
	Type:   "",
	Blocks: []*blockSpec{serviceSpec, pluginSpec, cloudSpec, tapeLibrarySpec},
}

// bodySchema derives the hcl schema of b's body. Reserved attributes and
// blocks are in the schema so that they get a "not supported yet" error
// rather than an "unsupported" one.
func (b *blockSpec) bodySchema() *hcl.BodySchema {
	s := &hcl.BodySchema{}
	for _, a := range b.Attrs {
		s.Attributes = append(s.Attributes, hcl.AttributeSchema{Name: a.Name, Required: a.Required && a.Reserved == ""})
	}
	for _, c := range b.Blocks {
		s.Blocks = append(s.Blocks, hcl.BlockHeaderSchema{Type: c.Type, LabelNames: c.Labels})
	}
	return s
}

func (b *blockSpec) attr(name string) *attrSpec {
	for i := range b.Attrs {
		if b.Attrs[i].Name == name {
			return &b.Attrs[i]
		}
	}
	return nil
}
