package parse

import (
	"fmt"
	"path/filepath"
	"regexp"
	"slices"
	"sort"
	"strings"
	"time"

	"github.com/hashicorp/hcl/v2"

	"github.com/lockstep-io/lockstep/policies/model"
)

// decoder accumulates the declarations of all files and every diagnostic.
type decoder struct {
	opts     Options
	diags    hcl.Diagnostics
	plugins  map[string]*pluginDecl
	services []*serviceDecl
}

type pluginDecl struct {
	m     *model.Plugin
	block *hcl.Block
}

type serviceDecl struct {
	m        *model.Service
	block    *hcl.Block
	volumes  []*volumeDecl
	apps     []*appDecl
	schedule hcl.Range // the schedule or every attribute
	rpo      hcl.Range // rpo.journal
	retain   hcl.Range // retention.journal, or the retention block, or the service
}

type volumeDecl struct {
	m      *model.Volume
	block  *hcl.Block
	target hcl.Range // target_name, or the volume block's header
}

type appDecl struct {
	m       *model.App
	block   *hcl.Block
	volumes []value // one per element of volumes
	deps    []value // one per element of depends_on
}

func (d *decoder) errorf(rng hcl.Range, summary, format string, args ...any) {
	d.diags = append(d.diags, &hcl.Diagnostic{Severity: hcl.DiagError, Summary: summary, Detail: fmt.Sprintf(format, args...), Subject: rng.Ptr()})
}

func (d *decoder) warnf(rng hcl.Range, summary, format string, args ...any) {
	d.diags = append(d.diags, &hcl.Diagnostic{Severity: hcl.DiagWarning, Summary: summary, Detail: fmt.Sprintf(format, args...), Subject: rng.Ptr()})
}

func (d *decoder) add(diags hcl.Diagnostics) { d.diags = append(d.diags, diags...) }

// where names a range for a diagnostic's detail ("web.lockstep.hcl:12,3").
func where(r hcl.Range) string {
	return fmt.Sprintf("%s:%d,%d", r.Filename, r.Start.Line, r.Start.Column)
}

type fileBlock struct {
	block *hcl.Block
	ctx   *hcl.EvalContext
	dir   string
}

func (d *decoder) decode(files []fileBody) *model.Policy {
	d.plugins = map[string]*pluginDecl{}
	var plugins, services []fileBlock
	for _, f := range files {
		content, diags := f.body.Content(rootSpec.bodySchema())
		d.add(diags)
		ctx := d.evalContext(f.name)
		for _, b := range content.Blocks {
			fb := fileBlock{block: b, ctx: ctx, dir: filepath.Dir(f.name)}
			switch b.Type {
			case pluginSpec.Type:
				plugins = append(plugins, fb)
			case serviceSpec.Type:
				services = append(services, fb)
			default:
				d.reserved(b, rootSpec)
			}
		}
	}
	// Plugins first: apps in any file may name them.
	for _, fb := range plugins {
		d.decodePlugin(fb)
	}
	seen := map[string]*serviceDecl{}
	for _, fb := range services {
		s := d.decodeService(fb)
		if s == nil {
			continue
		}
		if prev, dup := seen[s.m.Name]; dup {
			d.errorf(fb.block.LabelRanges[0], "Duplicate service", "A service named %q was already declared at %s. Service names must be unique across all policy files.", s.m.Name, where(prev.block.DefRange))
			continue
		}
		seen[s.m.Name] = s
		d.services = append(d.services, s)
	}
	d.checkServices()

	pol := &model.Policy{}
	for _, s := range d.services {
		pol.Services = append(pol.Services, s.m)
	}
	for _, p := range d.plugins {
		pol.Plugins = append(pol.Plugins, p.m)
	}
	sort.Slice(pol.Services, func(i, j int) bool { return pol.Services[i].Name < pol.Services[j].Name })
	sort.Slice(pol.Plugins, func(i, j int) bool { return pol.Plugins[i].Name < pol.Plugins[j].Name })
	return pol
}

// reserved reports a block the language keeps room for but does not accept yet.
func (d *decoder) reserved(b *hcl.Block, parent *blockSpec) {
	for _, c := range parent.Blocks {
		if c.Type == b.Type && c.Reserved != "" {
			d.errorf(b.DefRange, "Not supported yet", "The %s block is reserved: %s. Remove it for now.", b.Type, c.Reserved)
		}
	}
}

// label checks a block label used as a name.
func (d *decoder) label(b *hcl.Block, i int) bool {
	if err := checkName(b.Labels[i]); err != nil {
		d.errorf(b.LabelRanges[i], "Invalid name", "Invalid %s name: %s.", b.Type, err)
		return false
	}
	return true
}

var sha256RE = regexp.MustCompile(`^[0-9a-fA-F]{64}$`)

func (d *decoder) decodePlugin(fb fileBlock) {
	b := fb.block
	if !d.label(b, 0) {
		return
	}
	name := b.Labels[0]
	content, diags := b.Body.Content(pluginSpec.bodySchema())
	d.add(diags)
	p := &model.Plugin{Name: name}
	if prev, dup := d.plugins[name]; dup {
		d.errorf(b.LabelRanges[0], "Duplicate plugin", "A plugin named %q was already declared at %s.", name, where(prev.block.DefRange))
		return
	}
	d.plugins[name] = &pluginDecl{m: p, block: b}
	if a := content.Attributes["source"]; a != nil {
		if s, v, ok := d.str(a.Expr, fb.ctx, "plugin.source"); ok {
			switch {
			case s == model.SourceBuiltin:
				if !slices.Contains(d.opts.Plugins.Names(), name) {
					d.errorf(b.LabelRanges[0], "Unknown built-in plugin", "There is no built-in plugin named %q; the built-in plugins are %s.%s", name, quoteList(d.opts.Plugins.Names()), suggest(name, d.opts.Plugins.Names()))
				}
			case s == "":
				d.errorf(v.rng, "Invalid plugin source", "source must be \"builtin\" or the path of the plugin binary.")
			default:
				if !filepath.IsAbs(s) {
					s = filepath.Join(fb.dir, s)
				}
			}
			p.Source = s
		}
	}
	if a := content.Attributes["sha256"]; a != nil {
		if s, v, ok := d.str(a.Expr, fb.ctx, "plugin.sha256"); ok {
			if !sha256RE.MatchString(s) {
				d.errorf(v.rng, "Invalid sha256", "sha256 must be the 64 hexadecimal digits of the plugin binary's SHA-256 (as printed by sha256sum); found %q.", s)
			}
			p.SHA256 = strings.ToLower(s)
		}
	}
	if a := content.Attributes["version"]; a != nil {
		if s, v, ok := d.str(a.Expr, fb.ctx, "plugin.version"); ok {
			if s == "" {
				d.errorf(v.rng, "Invalid version", "version must not be empty; remove it to accept any version.")
			}
			p.Version = s
		}
	}
	if p.Source != "" && !p.Builtin() && p.SHA256 == "" {
		d.warnf(b.DefRange, "Unpinned plugin binary", "Plugin %q runs %s without a sha256: any binary at that path will be trusted. Add sha256 = \"<sha256sum of the binary>\".", name, p.Source)
	}
}

func (d *decoder) decodeService(fb fileBlock) *serviceDecl {
	b := fb.block
	nameOK := d.label(b, 0)
	s := &serviceDecl{m: &model.Service{Name: b.Labels[0]}, block: b, retain: b.DefRange}
	content, diags := b.Body.Content(serviceSpec.bodySchema())
	d.add(diags)
	singles := map[string]*hcl.Block{}
	for _, c := range content.Blocks {
		switch c.Type {
		case volumeSpec.Type:
			d.decodeVolume(s, fb, c)
			continue
		case appSpec.Type:
			d.decodeApp(s, fb, c)
			continue
		case copySpec.Type:
			d.reserved(c, serviceSpec)
			continue
		}
		if prev := singles[c.Type]; prev != nil {
			d.errorf(c.DefRange, "Duplicate "+c.Type+" block", "A service has at most one %s block; service %q already has one at %s.", c.Type, s.m.Name, where(prev.DefRange))
			continue
		}
		singles[c.Type] = c
		switch c.Type {
		case consistencySpec.Type:
			d.decodeConsistency(s, fb, c)
		case rpoSpec.Type:
			d.decodeRPO(s, fb, c)
		case retentionSpec.Type:
			d.decodeRetention(s, fb, c)
		}
	}
	for _, req := range serviceSpec.Blocks {
		if req.Required && singles[req.Type] == nil {
			d.errorf(b.DefRange, "Missing "+req.Type+" block", "Service %q needs a %s block: %s", s.m.Name, req.Type, req.Doc)
		}
	}
	if singles[retentionSpec.Type] == nil {
		s.m.Retention.Journal = retentionDefault
	}
	if !nameOK {
		return nil
	}
	return s
}

// Defaults, as documented in the schema tables.
const (
	defaultBlockSize      = 512
	defaultQuiesceTimeout = 10 * time.Second
	retentionDefault      = 72 * time.Hour
	// vssHoldLimit is how long Windows VSS lets writes be held; longer
	// freezes risk application and initiator timeouts.
	vssHoldLimit = 10 * time.Second
)

func (d *decoder) decodeVolume(s *serviceDecl, fb fileBlock, b *hcl.Block) {
	if !d.label(b, 0) {
		return
	}
	name := b.Labels[0]
	for _, v := range s.volumes {
		if v.m.Name == name {
			d.errorf(b.LabelRanges[0], "Duplicate volume", "Service %q already has a volume named %q at %s.", s.m.Name, name, where(v.block.DefRange))
			return
		}
	}
	content, diags := b.Body.Content(volumeSpec.bodySchema())
	d.add(diags)
	v := &volumeDecl{m: &model.Volume{Name: name, BlockSize: defaultBlockSize, TargetName: defaultTargetName(s.m.Name, name)}, block: b, target: b.DefRange}
	s.volumes = append(s.volumes, v)
	s.m.Volumes = append(s.m.Volumes, v.m)

	if a := content.Attributes["block_size"]; a != nil {
		if n, ok := d.integer(a.Expr, fb.ctx, "block_size", 0, 1<<20); ok {
			if n != 512 && n != 4096 {
				d.errorf(a.Expr.Range(), "Invalid block size", "block_size must be 512 or 4096; found %d.", n)
			} else {
				v.m.BlockSize = int(n)
			}
		}
	}
	if a := content.Attributes["size"]; a != nil {
		if str, val, ok := d.str(a.Expr, fb.ctx, "size"); ok {
			n, err := parseSize(str)
			switch {
			case err != nil:
				d.errorf(val.rng, "Invalid size", "Volume %q: %s.", name, err)
			case n%int64(v.m.BlockSize) != 0:
				d.errorf(val.rng, "Invalid size", "Volume %q: %s is not a multiple of the block size %d.", name, str, v.m.BlockSize)
			default:
				v.m.Size = n
			}
		}
	}
	if a := content.Attributes["target_name"]; a != nil {
		if str, val, ok := d.str(a.Expr, fb.ctx, "target_name"); ok {
			if err := checkISCSIName(str); err != nil {
				d.errorf(val.rng, "Invalid target name", "Volume %q: %s.", name, err)
			} else {
				v.m.TargetName, v.target = str, val.rng
			}
		}
	}
	if a := content.Attributes["initiators"]; a != nil {
		if list, vals, ok := d.strList(a.Expr, fb.ctx, "initiators"); ok {
			for i, ini := range list {
				if err := checkISCSIName(ini); err != nil {
					d.errorf(vals[i].rng, "Invalid initiator name", "Volume %q: %s.", name, err)
				}
			}
			v.m.Initiators = list
		}
	}
	for i, c := range content.Blocks {
		if i > 0 {
			d.errorf(c.DefRange, "Duplicate chap block", "Volume %q already has a chap block at %s.", name, where(content.Blocks[0].DefRange))
			continue
		}
		v.m.CHAP = d.decodeCHAP(fb, c)
	}
	if len(v.m.Initiators) == 0 && v.m.CHAP == nil {
		d.warnf(b.DefRange, "Volume open to any initiator", "Volume %q of service %q lists no initiators and has no chap block: any host that reaches the iSCSI port can write to it. Add initiators = [...] or a chap block.", name, s.m.Name)
	}
}

// secret evaluates an attribute that must hold a secret from env() or file().
func (d *decoder) secret(a *hcl.Attribute, ctx *hcl.EvalContext, what string) (model.Secret, bool) {
	str, v, ok := d.str(a.Expr, ctx, what)
	if !ok {
		return model.Secret{}, false
	}
	if !v.secret() {
		d.errorf(v.rng, "Secret written in clear", "%s is a secret: write it as env(\"NAME\") or file(\"path\") so that it never sits in the policy in clear.", what)
		return model.Secret{}, false
	}
	return model.NewSecret(str, v.source()), true
}

const (
	chapMinSecret = 12 // RFC 7143 section 9.2.1
	chapMaxSecret = 16 // what common initiators (Microsoft's) accept
)

func (d *decoder) checkCHAPSecret(a *hcl.Attribute, s model.Secret, what string) {
	switch n := len(s.Reveal()); {
	case n < chapMinSecret:
		d.errorf(a.Expr.Range(), "CHAP secret too short", "%s from %s is %d bytes; RFC 7143 requires at least %d.", what, s.Source(), n, chapMinSecret)
	case n > chapMaxSecret:
		d.warnf(a.Expr.Range(), "Long CHAP secret", "%s from %s is %d bytes; some initiators (Microsoft's) accept at most %d.", what, s.Source(), n, chapMaxSecret)
	}
}

func (d *decoder) decodeCHAP(fb fileBlock, b *hcl.Block) *model.CHAP {
	content, diags := b.Body.Content(chapSpec.bodySchema())
	d.add(diags)
	c := &model.CHAP{}
	if a := content.Attributes["username"]; a != nil {
		if s, v, ok := d.str(a.Expr, fb.ctx, "chap.username"); ok {
			if s == "" {
				d.errorf(v.rng, "Invalid CHAP username", "chap.username must not be empty.")
			}
			c.Username = s
		}
	}
	secretAttr := content.Attributes["secret"]
	if secretAttr != nil {
		if s, ok := d.secret(secretAttr, fb.ctx, "chap.secret"); ok {
			d.checkCHAPSecret(secretAttr, s, "chap.secret")
			c.Secret = s
		}
	}
	mu, ms := content.Attributes["mutual_username"], content.Attributes["mutual_secret"]
	if (mu == nil) != (ms == nil) {
		d.errorf(b.DefRange, "Incomplete mutual CHAP", "Set both mutual_username and mutual_secret for mutual CHAP, or neither.")
	}
	if mu != nil {
		if s, _, ok := d.str(mu.Expr, fb.ctx, "chap.mutual_username"); ok {
			c.MutualUsername = s
		}
	}
	if ms != nil {
		if s, ok := d.secret(ms, fb.ctx, "chap.mutual_secret"); ok {
			d.checkCHAPSecret(ms, s, "chap.mutual_secret")
			if secretAttr != nil && s.Reveal() == c.Secret.Reveal() {
				d.errorf(ms.Expr.Range(), "Mutual CHAP secret reused", "chap.mutual_secret must differ from chap.secret (RFC 7143 section 9.2.1).")
			}
			c.MutualSecret = s
		}
	}
	return c
}

// duration evaluates a positive duration attribute.
func (d *decoder) duration(a *hcl.Attribute, ctx *hcl.EvalContext, what string, least time.Duration) (time.Duration, bool) {
	s, v, ok := d.str(a.Expr, ctx, what)
	if !ok {
		return 0, false
	}
	dur, err := parseDuration(s)
	if err != nil {
		d.errorf(v.rng, "Invalid duration", "%s: %s.", what, err)
		return 0, false
	}
	if dur < least {
		d.errorf(v.rng, "Invalid duration", "%s must be at least %s; found %q.", what, model.FormatDuration(least), s)
		return 0, false
	}
	return dur, true
}

func (d *decoder) decodeConsistency(s *serviceDecl, fb fileBlock, b *hcl.Block) {
	content, diags := b.Body.Content(consistencySpec.bodySchema())
	d.add(diags)
	c := &s.m.Consistency
	c.QuiesceTimeout, c.OnQuiesceFailure = defaultQuiesceTimeout, model.CrashConsistent
	sched, every := content.Attributes["schedule"], content.Attributes["every"]
	switch {
	case sched != nil && every != nil:
		d.errorf(every.NameRange, "Conflicting schedule", "Set either schedule or every in the consistency block of service %q, not both.", s.m.Name)
	case sched == nil && every == nil:
		d.errorf(b.DefRange, "Missing schedule", "The consistency block of service %q needs schedule = \"<cron>\" or every = \"<duration>\".", s.m.Name)
	case sched != nil:
		s.schedule = sched.Expr.Range()
		if str, v, ok := d.str(sched.Expr, fb.ctx, "consistency.schedule"); ok {
			cs, err := parseCron(str)
			if err != nil {
				d.errorf(v.rng, "Invalid cron expression", "consistency.schedule %q: %s.", str, err)
				break
			}
			gap, err := maxGap(cs)
			if err != nil {
				d.errorf(v.rng, "Invalid cron expression", "consistency.schedule %q: %s.", str, err)
				break
			}
			c.Schedule, c.MaxGap = str, gap
		}
	case every != nil:
		s.schedule = every.Expr.Range()
		if dur, ok := d.duration(every, fb.ctx, "consistency.every", time.Second); ok {
			c.Every, c.MaxGap = dur, dur
		}
	}
	if a := content.Attributes["quiesce_timeout"]; a != nil {
		if dur, ok := d.duration(a, fb.ctx, "consistency.quiesce_timeout", time.Millisecond); ok {
			c.QuiesceTimeout = dur
			if dur > vssHoldLimit {
				d.warnf(a.Expr.Range(), "Long quiesce timeout", "Service %q may hold application writes for up to %s; beyond %s (the Windows VSS hold limit) applications and initiators may time out.", s.m.Name, model.FormatDuration(dur), model.FormatDuration(vssHoldLimit))
			}
		}
	}
	if a := content.Attributes["on_quiesce_failure"]; a != nil {
		allowed := []string{string(model.CrashConsistent), string(model.Skip)}
		if str, v, ok := d.str(a.Expr, fb.ctx, "consistency.on_quiesce_failure"); ok {
			if !slices.Contains(allowed, str) {
				d.errorf(v.rng, "Invalid value", "on_quiesce_failure must be one of %s; found %q.%s", quoteList(allowed), str, suggest(str, allowed))
			} else {
				c.OnQuiesceFailure = model.QuiesceFailure(str)
				if c.OnQuiesceFailure == model.Skip {
					d.warnf(v.rng, "Markers skipped on failure", "With on_quiesce_failure = \"skip\", a failing application leaves service %q with no marker at all, and the RPO can be breached; \"crash_consistent\" still records a point to restore to.", s.m.Name)
				}
			}
		}
	}
}

func (d *decoder) decodeRPO(s *serviceDecl, fb fileBlock, b *hcl.Block) {
	content, diags := b.Body.Content(rpoSpec.bodySchema())
	d.add(diags)
	for _, a := range rpoSpec.Attrs {
		if attr := content.Attributes[a.Name]; attr != nil && a.Reserved != "" {
			d.errorf(attr.NameRange, "Not supported yet", "rpo.%s is reserved: %s. Remove it for now.", a.Name, a.Reserved)
		}
	}
	if a := content.Attributes["journal"]; a != nil {
		s.rpo = a.Expr.Range()
		if dur, ok := d.duration(a, fb.ctx, "rpo.journal", time.Second); ok {
			s.m.RPO.Journal = dur
		}
	}
}

func (d *decoder) decodeRetention(s *serviceDecl, fb fileBlock, b *hcl.Block) {
	content, diags := b.Body.Content(retentionSpec.bodySchema())
	d.add(diags)
	r := &s.m.Retention
	r.Journal, s.retain = retentionDefault, b.DefRange
	if a := content.Attributes["journal"]; a != nil {
		s.retain = a.Expr.Range()
		if dur, ok := d.duration(a, fb.ctx, "retention.journal", time.Second); ok {
			r.Journal = dur
		}
	}
	for name, dst := range map[string]*int{"keep_hourly": &r.KeepHourly, "keep_daily": &r.KeepDaily, "keep_weekly": &r.KeepWeekly, "keep_monthly": &r.KeepMonthly, "keep_yearly": &r.KeepYearly} {
		if a := content.Attributes[name]; a != nil {
			if n, ok := d.integer(a.Expr, fb.ctx, "retention."+name, 0, 1000000); ok {
				*dst = int(n)
			}
		}
	}
}

// appHostSchema is the part of an app body the host owns.
var appHostSchema = appSpec.bodySchema()

func (d *decoder) decodeApp(s *serviceDecl, fb fileBlock, b *hcl.Block) {
	nameOK := d.label(b, 1)
	plugin, name := b.Labels[0], b.Labels[1]
	content, remain, diags := b.Body.PartialContent(appHostSchema)
	d.add(diags)
	a := &appDecl{m: &model.App{Plugin: plugin, Name: name, Volumes: []string{}, DependsOn: []string{}, Config: map[string]any{}}, block: b}
	if attr := content.Attributes["volumes"]; attr != nil {
		if list, vals, ok := d.strList(attr.Expr, fb.ctx, "volumes"); ok {
			a.m.Volumes, a.volumes = list, vals
		}
	}
	if attr := content.Attributes["depends_on"]; attr != nil {
		if list, vals, ok := d.strList(attr.Expr, fb.ctx, "depends_on"); ok {
			a.m.DependsOn, a.deps = list, vals
		}
	}
	var decl *model.Plugin
	if p := d.plugins[plugin]; p != nil {
		decl = p.m
	}
	schema, ok := d.opts.Plugins.AppSchema(plugin, decl)
	switch {
	case ok:
		d.decodePluginBody(a, fb, remain, schema)
	case decl != nil:
		d.errorf(b.LabelRanges[0], "Plugin schema unavailable", "Plugin %q (source %q) publishes no schema this lockstep can read, so the settings of app %q cannot be checked. External plugins become usable with the plugin loader.", plugin, decl.Source, name)
	default:
		known := append(d.opts.Plugins.Names(), mapKeys(d.plugins)...)
		d.errorf(b.LabelRanges[0], "Unknown plugin", "App %q names plugin %q, which is neither built in nor declared with a plugin block.%s", name, plugin, suggest(plugin, known))
	}
	if !nameOK {
		return
	}
	for _, prev := range s.apps {
		if prev.m.Name == name {
			d.errorf(b.LabelRanges[1], "Duplicate app", "Service %q already has an app named %q at %s.", s.m.Name, name, where(prev.block.DefRange))
			return
		}
	}
	s.apps = append(s.apps, a)
}

func mapKeys[V any](m map[string]V) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	return keys
}

// bodySchema is the hcl schema of the plugin's part of an app body.
func (p *PluginSchema) bodySchema() *hcl.BodySchema {
	s := &hcl.BodySchema{}
	for _, a := range p.Attributes {
		s.Attributes = append(s.Attributes, hcl.AttributeSchema{Name: a.Name, Required: a.Required})
	}
	return s
}

// decodePluginBody checks the plugin-owned attributes of an app against the
// plugin's schema and fills in its defaults.
func (d *decoder) decodePluginBody(a *appDecl, fb fileBlock, body hcl.Body, schema *PluginSchema) {
	content, diags := body.Content(schema.bodySchema())
	d.add(diags)
	for _, spec := range schema.Attributes {
		attr := content.Attributes[spec.Name]
		if attr == nil {
			if spec.Default != nil {
				a.m.Config[spec.Name] = spec.Default
			}
			continue
		}
		what := fmt.Sprintf("%s of app %q", spec.Name, a.m.Name)
		if v, ok := d.pluginValue(attr, fb, spec, what); ok {
			a.m.Config[spec.Name] = v
		}
	}
}

func (d *decoder) pluginValue(attr *hcl.Attribute, fb fileBlock, spec PluginAttr, what string) (any, bool) {
	rng := attr.Expr.Range()
	switch spec.Type {
	case String:
		s, _, ok := d.str(attr.Expr, fb.ctx, what)
		if !ok {
			return nil, false
		}
		return s, d.checkString(rng, s, spec, what)
	case StringList:
		list, vals, ok := d.strList(attr.Expr, fb.ctx, what)
		if !ok {
			return nil, false
		}
		if spec.NonEmpty && len(list) == 0 {
			d.errorf(rng, "Invalid value", "%s must not be empty.", what)
			return nil, false
		}
		for i, s := range list {
			ok = d.checkString(vals[i].rng, s, PluginAttr{Absolute: spec.Absolute}, "each element of "+what) && ok
		}
		return list, ok
	case Duration:
		return d.duration(attr, fb.ctx, what, time.Millisecond)
	case Number:
		return d.integer(attr.Expr, fb.ctx, what, -1<<53, 1<<53)
	case Bool:
		return d.boolean(attr.Expr, fb.ctx, what)
	case Secret:
		return d.secret(attr, fb.ctx, what)
	case Sensitive:
		s, v, ok := d.str(attr.Expr, fb.ctx, what)
		if !ok || !d.checkString(rng, s, spec, what) {
			return nil, false
		}
		src := v.source()
		if !v.secret() {
			src = "literal"
			if inlinePasswordRE.MatchString(s) {
				d.warnf(rng, "Password in clear", "%s holds a password written in the policy. Move it out: %s = env(\"NAME\"), or a file(\"path\") readable only by lockstep.", what, spec.Name)
			}
		}
		return model.NewSecret(s, src), true
	}
	d.errorf(rng, "Unsupported attribute type", "%s has type %q, which this lockstep cannot decode.", what, spec.Type)
	return nil, false
}

func (d *decoder) checkString(rng hcl.Range, s string, spec PluginAttr, what string) bool {
	switch {
	case spec.NonEmpty && s == "":
		d.errorf(rng, "Invalid value", "%s must not be empty.", what)
	case spec.Absolute && !strings.HasPrefix(s, "/"):
		d.errorf(rng, "Invalid path", "%s must be an absolute path; found %q.", what, s)
	case len(spec.OneOf) > 0 && !slices.Contains(spec.OneOf, s):
		d.errorf(rng, "Invalid value", "%s must be one of %s; found %q.%s", what, quoteList(spec.OneOf), s, suggest(s, spec.OneOf))
	default:
		return true
	}
	return false
}
