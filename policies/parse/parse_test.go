package parse

import (
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/lockstep-io/lockstep/policies/model"
)

// exampleEnv holds the secrets the policies under examples/ read; their
// README lists the same names.
var exampleEnv = map[string]string{
	"PORTAL_DB_CHAP_SECRET":   "portal-chap-01",
	"PORTAL_PG_DSN":           "host=db1.example.com user=lockstep password=s3cret",
	"MAIL_CHAP_SECRET":        "mail-chap-0001",
	"MAIL_CHAP_MUTUAL_SECRET": "mail-mutual-01",
	"MAIL_IMAP_PASSWORD":      "imap-pass",
	"ERP_MARIADB_PASSWORD":    "mariadb-pass",
}

// TestExamplesValidate is how CI validates every policy under examples/.
func TestExamplesValidate(t *testing.T) {
	opts := Options{LookupEnv: func(k string) (string, bool) { v, ok := exampleEnv[k]; return v, ok }}
	res, err := Load([]string{"../../examples"}, opts)
	if err != nil {
		t.Fatal(err)
	}
	if res.Policy == nil || len(res.Diagnostics) > 0 {
		t.Fatalf("examples do not validate cleanly:\n%s", render(t, res))
	}
	for _, name := range []string{"web-portal", "mail", "erp"} {
		if res.Policy.Service(name) == nil {
			t.Errorf("examples lack service %q", name)
		}
	}
	readme, err := os.ReadFile("../../examples/README.md")
	if err != nil {
		t.Fatal(err)
	}
	for k := range exampleEnv {
		if !strings.Contains(string(readme), k) {
			t.Errorf("examples/README.md does not mention %s", k)
		}
	}
}

func TestResolvedModel(t *testing.T) {
	opts := Options{LookupEnv: func(k string) (string, bool) { v, ok := exampleEnv[k]; return v, ok }}
	res, err := Load([]string{"../../examples"}, opts)
	if err != nil || res.Policy == nil {
		t.Fatalf("load: %v %v", err, res.Diagnostics)
	}
	web := res.Policy.Service("web-portal")
	pg := web.Volume("pgdata")
	if pg.Size != 50<<30 || pg.BlockSize != 512 || pg.TargetName != "iqn.2026-11.io.lockstep:web-portal.pgdata" {
		t.Errorf("pgdata = %+v", pg)
	}
	if pg.CHAP == nil || pg.CHAP.Secret.Reveal() != "portal-chap-01" || pg.CHAP.Secret.Source() != `env("PORTAL_DB_CHAP_SECRET")` {
		t.Errorf("pgdata chap = %+v", pg.CHAP)
	}
	// Apps come in dependency order: the portal after db and content.
	var order []string
	for _, a := range web.Apps {
		order = append(order, a.Name)
	}
	if strings.Join(order, ",") != "db,content,portal" {
		t.Errorf("app order %v", order)
	}
	db := web.App("db")
	if db.Config["os_user"] != "postgres" || db.Host() != "db1.example.com" {
		t.Errorf("db config %v", db.Config)
	}
	if dsn, ok := db.Config["dsn"].(model.Secret); !ok || !strings.Contains(dsn.Reveal(), "password=s3cret") {
		t.Errorf("dsn = %#v", db.Config["dsn"])
	}
	if p := web.App("portal"); p.Config["timeout"] != 20*time.Second || p.Config["on_error"] != "fail" {
		t.Errorf("portal config %v", p.Config)
	}
	c := web.Consistency
	if c.Every != 5*time.Minute || c.MaxGap != 5*time.Minute || c.QuiesceTimeout != 10*time.Second || c.OnQuiesceFailure != model.CrashConsistent {
		t.Errorf("consistency %+v", c)
	}
	mail := res.Policy.Service("mail")
	if mail.Retention.Journal != 7*24*time.Hour || mail.Consistency.MaxGap != 15*time.Minute {
		t.Errorf("mail %+v %+v", mail.Retention, mail.Consistency)
	}
	erp := res.Policy.Service("erp")
	if erp.Volume("mariadb-log").TargetName != "iqn.2026-11.com.example.storage:erp-db-log" {
		t.Errorf("target_name override lost")
	}
	if len(res.Policy.Plugins) != 1 || !res.Policy.Plugins[0].Builtin() {
		t.Errorf("plugins %+v", res.Policy.Plugins)
	}
	// Nothing secret survives JSON or the rendered policy.
	b, err := json.Marshal(res.Policy)
	if err != nil {
		t.Fatal(err)
	}
	for _, out := range []string{string(b), string(Render(res.Policy))} {
		for _, v := range exampleEnv {
			if strings.Contains(out, v) {
				t.Errorf("secret %q leaked into output", v)
			}
		}
	}
}

func TestRenderedPolicyReparses(t *testing.T) {
	opts := Options{LookupEnv: func(k string) (string, bool) { v, ok := exampleEnv[k]; return v, ok }}
	res, err := Load([]string{"../../examples"}, opts)
	if err != nil || res.Policy == nil {
		t.Fatalf("load: %v %v", err, res.Diagnostics)
	}
	out := Render(res.Policy)
	// Secrets are redacted, so the rendering is not a valid policy; but
	// every error must be about a secret, proving the rest round-trips.
	again := Parse([]Source{{Filename: "rendered.hcl", Bytes: out}}, opts)
	for _, d := range errorsOf(again.Diagnostics) {
		if d.Summary != "Secret written in clear" {
			t.Errorf("rendered policy: %s: %s\n%s", d.Summary, d.Detail, out)
		}
	}
}

func TestSecretsFromFileAndTemplates(t *testing.T) {
	dir := t.TempDir()
	if err := os.WriteFile(filepath.Join(dir, "chap.secret"), []byte("0123456789abcd\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	policy := `
service "s" {
  volume "v" {
    size = "1GiB"
    chap {
      username = "u"
      secret   = file("chap.secret")
    }
  }
  app "postgres" "db" {
    volumes = ["v"]
    dsn     = "host=x user=y password=${env("PW")}"
  }
  consistency {
    every = "30s"
  }
  rpo {
    journal = "1m"
  }
}
`
	name := filepath.Join(dir, "p.lockstep.hcl")
	if err := os.WriteFile(name, []byte(policy), 0o600); err != nil {
		t.Fatal(err)
	}
	res, err := Load([]string{dir}, Options{LookupEnv: func(k string) (string, bool) { return "pw-" + k, k == "PW" }})
	if err != nil {
		t.Fatal(err)
	}
	if res.Policy == nil {
		t.Fatalf("%s", render(t, res))
	}
	s := res.Policy.Service("s")
	if got := s.Volume("v").CHAP.Secret; got.Reveal() != "0123456789abcd" || got.Source() != `file("chap.secret")` {
		t.Errorf("chap secret %q from %q", got.Reveal(), got.Source())
	}
	dsn := s.App("db").Config["dsn"].(model.Secret)
	if dsn.Reveal() != "host=x user=y password=pw-PW" || dsn.Source() != `env("PW")` {
		t.Errorf("dsn %q from %q", dsn.Reveal(), dsn.Source())
	}
	// A password in a template from env() is no password in clear.
	for _, w := range warningsOf(res.Diagnostics) {
		if w.Summary == "Password in clear" {
			t.Errorf("unexpected warning: %s", w.Detail)
		}
	}
}

func TestWarnings(t *testing.T) {
	res := loadFile(t, "../testdata/valid/risky.lockstep.hcl")
	if res.Policy == nil {
		t.Fatalf("risky but legal policy rejected:\n%s", render(t, res))
	}
	got := map[string]int{}
	for _, w := range warningsOf(res.Diagnostics) {
		got[w.Summary]++
		if w.Subject == nil {
			t.Errorf("warning %q has no range", w.Summary)
		}
	}
	for _, want := range []string{
		"Volume open to any initiator", "Password in clear", "Long quiesce timeout",
		"Markers skipped on failure", "RPO without margin", "Unpinned plugin binary",
		"No applications", "Long CHAP secret",
	} {
		if got[want] == 0 {
			t.Errorf("no %q warning; got %v", want, got)
		}
	}
}

// fakeVendor stands in for plugins that publish their schema: the host
// checks a vendor plugin's body with the same precision as a built-in one.
type fakeVendor struct{ Builtin }

func (f fakeVendor) AppSchema(name string, decl *model.Plugin) (*PluginSchema, bool) {
	if name == "redis" && decl != nil {
		return &PluginSchema{Plugin: "redis", Attributes: []PluginAttr{
			{Name: "address", Type: String, Required: true},
			{Name: "save_timeout", Type: Duration, Default: 5 * time.Second},
		}}, true
	}
	return f.Builtin.AppSchema(name, decl)
}

func TestVendorPluginSchema(t *testing.T) {
	const policy = `
plugin "redis" {
  source  = "plugins/lockstep-redis"
  sha256  = "0000000000000000000000000000000000000000000000000000000000000000"
  version = "1.2.0"
}

service "cache" {
  volume "v" {
    size       = "1GiB"
    initiators = ["iqn.2026-11.com.example:h"]
  }
  app "redis" "cache" {
    volumes  = ["v"]
    address  = "127.0.0.1:6379"
    sav_timeout = "10s"
  }
  consistency {
    every = "1m"
  }
  rpo {
    journal = "5m"
  }
}
`
	opts := testOptions()
	opts.Plugins = fakeVendor{}
	res := Parse([]Source{{Filename: "/etc/lockstep/cache.hcl", Bytes: []byte(policy)}}, opts)
	errs := errorsOf(res.Diagnostics)
	if len(errs) != 1 || errs[0].Summary != "Unsupported argument" || errs[0].Subject.Start.Line != 16 || !strings.Contains(errs[0].Detail, `"save_timeout"`) {
		t.Fatalf("want one typo error at line 16:\n%s", render(t, res))
	}
	fixed := strings.Replace(policy, "sav_timeout", "save_timeout", 1)
	res = Parse([]Source{{Filename: "/etc/lockstep/cache.hcl", Bytes: []byte(fixed)}}, opts)
	if res.Policy == nil {
		t.Fatalf("%s", render(t, res))
	}
	if p := res.Policy.Plugins[0]; p.Source != "/etc/lockstep/plugins/lockstep-redis" || p.Version != "1.2.0" {
		t.Errorf("plugin %+v", p)
	}
	if got := res.Policy.Service("cache").App("cache").Config["save_timeout"]; got != 10*time.Second {
		t.Errorf("save_timeout = %v", got)
	}
	// Without a schema source that knows it, the external plugin is refused.
	res = Parse([]Source{{Filename: "/etc/lockstep/cache.hcl", Bytes: []byte(fixed)}}, testOptions())
	if errs := errorsOf(res.Diagnostics); len(errs) != 1 || errs[0].Summary != "Plugin schema unavailable" {
		t.Errorf("want Plugin schema unavailable:\n%s", render(t, res))
	}
}

func TestNoFilesIsAnError(t *testing.T) {
	if _, err := Load([]string{t.TempDir()}, Options{}); err == nil {
		t.Error("empty directory accepted")
	}
	if _, err := Load([]string{filepath.Join(t.TempDir(), "missing")}, Options{}); err == nil {
		t.Error("missing path accepted")
	}
}
