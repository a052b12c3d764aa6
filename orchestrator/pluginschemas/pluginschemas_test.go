package pluginschemas

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/lockstep-io/lockstep/plugins/host"
	"github.com/lockstep-io/lockstep/plugins/sdk"
	"github.com/lockstep-io/lockstep/policies/model"
)

func TestCacheKeepsTypes(t *testing.T) {
	in := sdk.Schema{Doc: "d", Attributes: []sdk.Attribute{
		{Name: "s", Type: sdk.String, Default: "x", OneOf: []string{"x", "y"}},
		{Name: "l", Type: sdk.StringList, Default: []string{"/a"}, Absolute: true},
		{Name: "d", Type: sdk.Duration, Default: 30 * time.Second},
		{Name: "n", Type: sdk.Number, Default: int64(7)},
		{Name: "b", Type: sdk.Bool, Default: true},
		{Name: "p", Type: sdk.Secret, Required: true},
	}}
	path := filepath.Join(t.TempDir(), ".schemas", "abc.json")
	writeCache(path, in)
	out, err := readCache(path)
	if err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(in, out) {
		t.Fatalf("got %#v", out)
	}
}

// fakeInstall writes a manifest and a "binary" by hand: Verify only reads.
func fakeInstall(t *testing.T, dir string, man host.Manifest, binary string) {
	t.Helper()
	if err := os.WriteFile(filepath.Join(dir, man.Name), []byte(binary), 0o755); err != nil {
		t.Fatal(err)
	}
	b, _ := json.Marshal(man)
	if err := os.WriteFile(filepath.Join(dir, man.Name+".json"), b, 0o644); err != nil {
		t.Fatal(err)
	}
}

func TestVerify(t *testing.T) {
	dir := t.TempDir()
	m := host.NewManager(dir, host.Options{})
	fakeInstall(t, dir, host.Manifest{Name: "good", Version: "1.0.0", Protocol: sdk.ProtocolVersion, SHA256: sha("good binary")}, "good binary")
	fakeInstall(t, dir, host.Manifest{Name: "swapped", Version: "1.0.0", Protocol: sdk.ProtocolVersion, SHA256: sha("original")}, "replaced")
	pol := &model.Policy{Plugins: []*model.Plugin{
		{Name: "postgres", Source: model.SourceBuiltin},
		{Name: "good", Source: "/x/good", Version: "1.0.0", SHA256: sha("good binary")},
		{Name: "good", Source: "/x/good", Version: "2.0.0"},
		{Name: "swapped", Source: "/x/swapped"},
		{Name: "missing", Source: "/x/missing"},
	}}
	errs := Verify(context.Background(), pol, m)
	var got []string
	for _, err := range errs {
		var pe *PinError
		if !errors.As(err, &pe) {
			t.Fatalf("not a PinError: %v", err)
		}
		got = append(got, pe.Plugin+" "+pe.What)
	}
	want := []string{"good version", "swapped binary", "missing installation"}
	if !reflect.DeepEqual(got, want) {
		t.Fatalf("got %v\n%v", got, errs)
	}
	if msg := errs[0].Error(); !strings.Contains(msg, `plugin "good": the policy pins version "2.0.0", the installed plugin has "1.0.0"`) || !strings.Contains(msg, "lockstep plugin install") {
		t.Fatalf("message: %s", msg)
	}
}

func TestAppSchemaBuiltinAndUndeclared(t *testing.T) {
	s := New(host.NewManager(t.TempDir(), host.Options{}))
	if _, ok := s.AppSchema("postgres", nil); !ok {
		t.Fatal("built-in postgres unknown")
	}
	if _, ok := s.AppSchema("missing", &model.Plugin{Name: "missing", Source: "/x"}); ok {
		t.Fatal("schema for a plugin that is not installed")
	}
	var pe *PinError
	if p := s.Problems(); len(p) != 1 || !errors.As(p[0], &pe) || pe.What != "installation" {
		t.Fatalf("problems %v", p)
	}
}

func sha(s string) string {
	sum := sha256.Sum256([]byte(s))
	return hex.EncodeToString(sum[:])
}
