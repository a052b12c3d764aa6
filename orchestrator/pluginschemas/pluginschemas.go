// Package pluginschemas connects the policy parser to the plugin
// directory: it gives the parser the schemas that installed plugins
// publish, and checks a policy's plugin pins (version, SHA-256) against
// what is installed. policies/ may not import plugins/, so the adapter
// lives here.
package pluginschemas

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sync"
	"time"

	"github.com/lockstep-io/lockstep/plugins/host"
	"github.com/lockstep-io/lockstep/plugins/sdk"
	"github.com/lockstep-io/lockstep/policies/model"
	"github.com/lockstep-io/lockstep/policies/parse"
)

// Schemas implements parse.PluginSchemas: built-in plugins from the
// parser's built-in table, plugins declared with a plugin block from the
// plugin directory. A plugin's schema is read over gRPC (ConfigSchema) once
// per binary and cached by its SHA-256, in memory and in DIR/.schemas, since
// the same checksum is the same binary.
type Schemas struct {
	m       *host.Manager
	builtin parse.PluginSchemas
	timeout time.Duration

	mu       sync.Mutex
	cache    map[string]*parse.PluginSchema // by sha256
	problems map[string]error               // by plugin name
}

var _ parse.PluginSchemas = (*Schemas)(nil)

// New returns the schemas of the plugins installed in m, and of the
// built-ins.
func New(m *host.Manager) *Schemas {
	return &Schemas{
		m: m, builtin: parse.Builtin{}, timeout: 20 * time.Second,
		cache: map[string]*parse.PluginSchema{}, problems: map[string]error{},
	}
}

// Names implements parse.PluginSchemas: the plugins usable without a
// plugin block are the built-ins; an installed plugin must be declared
// (and so may be pinned).
func (s *Schemas) Names() []string { return s.builtin.Names() }

// AppSchema implements parse.PluginSchemas.
func (s *Schemas) AppSchema(name string, decl *model.Plugin) (*parse.PluginSchema, bool) {
	if decl == nil || decl.Builtin() {
		return s.builtin.AppSchema(name, decl)
	}
	sc, err := s.schema(decl)
	if err != nil {
		s.mu.Lock()
		s.problems[name] = err
		s.mu.Unlock()
		return nil, false
	}
	return sc, true
}

// Problems returns why schemas of declared plugins could not be read (not
// installed, refused at launch), one error per plugin.
func (s *Schemas) Problems() []error {
	s.mu.Lock()
	defer s.mu.Unlock()
	var out []error
	for _, err := range s.problems {
		out = append(out, err)
	}
	return out
}

func (s *Schemas) schema(decl *model.Plugin) (*parse.PluginSchema, error) {
	spec, err := resolve(s.m, decl)
	if err != nil {
		return nil, err
	}
	s.mu.Lock()
	sc := s.cache[spec.SHA256]
	s.mu.Unlock()
	if sc != nil {
		return sc, nil
	}
	cacheFile := filepath.Join(s.m.Dir(), ".schemas", spec.SHA256+".json")
	raw, err := readCache(cacheFile)
	if err != nil {
		if raw, err = s.fetch(spec); err != nil {
			return nil, err
		}
		writeCache(cacheFile, raw) // best effort: the directory may be read-only
	}
	sc = convert(decl.Name, raw)
	s.mu.Lock()
	s.cache[spec.SHA256] = sc
	s.mu.Unlock()
	return sc, nil
}

// resolve finds the binary of a declared plugin: the one installed under
// its name, else the plugin block's source. A pinned sha256 must match the
// source's binary; an installed one is checked by Verify and at launch.
func resolve(m *host.Manager, decl *model.Plugin) (host.Spec, error) {
	man, err := m.Info(decl.Name)
	if err == nil {
		return host.Spec{Name: man.Name, Path: man.Binary, SHA256: man.SHA256}, nil
	}
	if !errors.Is(err, host.ErrNotInstalled) {
		return host.Spec{}, err
	}
	if st, serr := os.Stat(decl.Source); serr != nil || !st.Mode().IsRegular() {
		return host.Spec{}, &PinError{Plugin: decl.Name, What: "installation", Found: fmt.Sprintf("not in %s, and its source %s is not a file", m.Dir(), decl.Source)}
	}
	sum, err := host.FileSHA256(decl.Source)
	if err != nil {
		return host.Spec{}, fmt.Errorf("plugin %q: %w", decl.Name, err)
	}
	if decl.SHA256 != "" && decl.SHA256 != sum {
		return host.Spec{}, &PinError{Plugin: decl.Name, What: "sha256", Want: decl.SHA256, Found: sum, Hint: "the file at source " + decl.Source + " is not the pinned binary"}
	}
	return host.Spec{Name: decl.Name, Path: decl.Source, SHA256: sum}, nil
}

func (s *Schemas) fetch(spec host.Spec) (sdk.Schema, error) {
	c, err := host.New(spec, host.Options{})
	if err != nil {
		return sdk.Schema{}, err
	}
	defer c.Close()
	ctx, cancel := context.WithTimeout(context.Background(), s.timeout)
	defer cancel()
	return c.ConfigSchema(ctx)
}

// cachedSchema is sdk.Schema on disk. Defaults are stored as JSON and read
// back by the attribute's type, so an int64 or a duration keeps its type.
type cachedSchema struct {
	Doc        string       `json:"doc"`
	Attributes []cachedAttr `json:"attributes"`
}

type cachedAttr struct {
	sdk.Attribute
	Default json.RawMessage `json:"default,omitempty"`
}

func writeCache(path string, sc sdk.Schema) {
	out := cachedSchema{Doc: sc.Doc}
	for _, a := range sc.Attributes {
		ca := cachedAttr{Attribute: a}
		if a.Default != nil {
			b, err := json.Marshal(a.Default) // a duration marshals as nanoseconds
			if err != nil {
				return
			}
			ca.Default = b
		}
		ca.Attribute.Default = nil
		out.Attributes = append(out.Attributes, ca)
	}
	b, err := json.Marshal(out)
	if err != nil {
		return
	}
	if os.MkdirAll(filepath.Dir(path), 0o755) != nil {
		return
	}
	tmp := fmt.Sprintf("%s.%d.tmp", path, os.Getpid())
	if os.WriteFile(tmp, b, 0o644) != nil {
		return
	}
	if os.Rename(tmp, path) != nil {
		os.Remove(tmp)
	}
}

func readCache(path string) (sdk.Schema, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return sdk.Schema{}, err
	}
	var in cachedSchema
	if err := json.Unmarshal(b, &in); err != nil {
		return sdk.Schema{}, err
	}
	out := sdk.Schema{Doc: in.Doc}
	for _, ca := range in.Attributes {
		a := ca.Attribute
		if len(ca.Default) > 0 {
			d, err := decodeDefault(a.Type, ca.Default)
			if err != nil {
				return sdk.Schema{}, fmt.Errorf("%s: default of %q: %w", path, a.Name, err)
			}
			a.Default = d
		}
		out.Attributes = append(out.Attributes, a)
	}
	return out, nil
}

func decodeDefault(t sdk.Type, b json.RawMessage) (any, error) {
	switch t {
	case sdk.StringList:
		var v []string
		return v, json.Unmarshal(b, &v)
	case sdk.Duration:
		var v int64
		err := json.Unmarshal(b, &v)
		return time.Duration(v), err
	case sdk.Number:
		var v int64
		return v, json.Unmarshal(b, &v)
	case sdk.Bool:
		var v bool
		return v, json.Unmarshal(b, &v)
	case sdk.String, sdk.Secret, sdk.Sensitive:
		var v string
		return v, json.Unmarshal(b, &v)
	}
	return nil, fmt.Errorf("unknown type %q", t)
}

// convert turns a plugin's published schema into the parser's form; the
// two share their type names.
func convert(name string, sc sdk.Schema) *parse.PluginSchema {
	out := &parse.PluginSchema{Plugin: name, Doc: sc.Doc}
	for _, a := range sc.Attributes {
		out.Attributes = append(out.Attributes, parse.PluginAttr{
			Name: a.Name, Type: parse.ValueType(a.Type), Required: a.Required, Default: a.Default,
			OneOf: a.OneOf, Absolute: a.Absolute, NonEmpty: a.NonEmpty, Doc: a.Doc,
		})
	}
	return out
}

// PinError is a policy's plugin block that the installed plugin does not
// satisfy.
type PinError struct {
	Plugin string
	What   string // "installation", "version", "sha256", "protocol", "binary"
	Want   string
	Found  string
	Hint   string
}

func (e *PinError) Error() string {
	msg := fmt.Sprintf("plugin %q: the policy pins %s %q, the installed plugin has %q", e.Plugin, e.What, e.Want, e.Found)
	switch e.What {
	case "installation":
		msg = fmt.Sprintf("plugin %q is not installed (%s)", e.Plugin, e.Found)
	case "protocol":
		msg = fmt.Sprintf("plugin %q speaks protocol %s, this lockstep speaks %s", e.Plugin, e.Found, e.Want)
	case "binary":
		msg = fmt.Sprintf("plugin %q: the binary in the plugin directory has sha256 %s, not the %s recorded at install", e.Plugin, e.Found, e.Want)
	}
	if e.Hint != "" {
		msg += "; " + e.Hint
	}
	return msg
}

// Verify checks every non-built-in plugin block of p: the plugin is
// installed in m (else its source is a file), its binary is the one
// installed, its protocol is ours, and its version and SHA-256 are the
// pinned ones. A plugin that is not installed is started from its source
// to read its version. It returns one error per problem, most of them
// *PinError.
func Verify(ctx context.Context, p *model.Policy, m *host.Manager) []error {
	var errs []error
	for _, decl := range p.Plugins {
		if decl.Builtin() {
			continue
		}
		reinstall := fmt.Sprintf("install the pinned plugin with `lockstep plugin install --plugin-dir %s %s`", m.Dir(), decl.Source)
		man, err := m.Info(decl.Name)
		if errors.Is(err, host.ErrNotInstalled) {
			man, err = fromSource(ctx, m, decl)
		}
		if err != nil {
			var pe *PinError
			if errors.As(err, &pe) && pe.Hint == "" {
				pe.Hint = reinstall
			}
			errs = append(errs, err)
			continue
		}
		if decl.Version != "" && decl.Version != man.Version {
			errs = append(errs, &PinError{Plugin: decl.Name, What: "version", Want: decl.Version, Found: man.Version, Hint: reinstall})
		}
		if decl.SHA256 != "" && decl.SHA256 != man.SHA256 {
			errs = append(errs, &PinError{Plugin: decl.Name, What: "sha256", Want: decl.SHA256, Found: man.SHA256, Hint: reinstall})
		}
		if man.Protocol != sdk.ProtocolVersion {
			errs = append(errs, &PinError{Plugin: decl.Name, What: "protocol", Want: fmt.Sprint(sdk.ProtocolVersion), Found: fmt.Sprint(man.Protocol)})
		}
		if sum, err := host.FileSHA256(man.Binary); err != nil {
			errs = append(errs, fmt.Errorf("plugin %q: %w", decl.Name, err))
		} else if sum != man.SHA256 {
			errs = append(errs, &PinError{Plugin: decl.Name, What: "binary", Want: man.SHA256, Found: sum, Hint: reinstall})
		}
	}
	return errs
}

// fromSource reads the manifest of a plugin that is not installed by
// starting the binary its plugin block names.
func fromSource(ctx context.Context, m *host.Manager, decl *model.Plugin) (host.Manifest, error) {
	spec, err := resolve(m, decl)
	if err != nil {
		return host.Manifest{}, err
	}
	c, err := host.New(spec, host.Options{})
	if err != nil {
		return host.Manifest{}, err
	}
	defer c.Close()
	info, err := c.Info(ctx)
	if err != nil {
		return host.Manifest{}, err
	}
	return host.Manifest{Name: decl.Name, Version: info.Version, Protocol: info.Protocol, SHA256: spec.SHA256, Handles: info.Handles, Binary: spec.Path}, nil
}
