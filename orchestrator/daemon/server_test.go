package daemon

import (
	"context"
	"errors"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/lockstep-io/lockstep/internal/syncbuf"
	"github.com/lockstep-io/lockstep/orchestrator/api"
	"github.com/lockstep-io/lockstep/orchestrator/catalog"
)

func get(t *testing.T, d *testDaemon, path, auth string) (int, string) {
	t.Helper()
	req, _ := http.NewRequest("GET", "http://"+d.Addr()+path, nil)
	if auth != "" {
		req.Header.Set("Authorization", auth)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b)
}

func scrape(t *testing.T, d *testDaemon) string {
	t.Helper()
	code, body := get(t, d, "/metrics", "Bearer "+d.Token())
	if code != 200 {
		t.Fatalf("/metrics: %d %s", code, body)
	}
	return body
}

// Every endpoint, /metrics included, needs the token; the token file is
// 0600, survives restarts, and is made again only when it is missing.
func TestAPIAuth(t *testing.T) {
	d := startDaemon(t, "", policy(shopHCL))
	tok := d.Token()
	for _, path := range []string{"/v1/status", "/v1/services", "/v1/events", "/v1/volumes", "/metrics", "/v1/services/shop/markers"} {
		for _, auth := range []string{"", "Bearer", "Bearer wrong", "Basic " + tok, "Bearer " + tok + "x", "bearer " + tok} {
			if code, body := get(t, d, path, auth); code != http.StatusUnauthorized {
				t.Fatalf("GET %s with %q: %d, want 401\n%s", path, auth, code, body)
			}
		}
		if code, body := get(t, d, path, "Bearer "+tok); code != http.StatusOK {
			t.Fatalf("GET %s with the token: %d\n%s", path, code, body)
		}
	}
	_, err := api.New(d.Addr(), "nope").Status(context.Background())
	if !errors.Is(err, api.ErrUnauthorized) {
		t.Fatalf("client with a wrong token: %v", err)
	}

	path := filepath.Join(d.dir, api.TokenFile)
	fi, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	if fi.Mode().Perm() != 0o600 {
		t.Fatalf("token file mode %v, want 0600", fi.Mode().Perm())
	}
	d.stop()

	// A restart keeps the token.
	d2 := startDaemon(t, d.dir, nil)
	if d2.Token() != tok {
		t.Fatal("restart changed the token")
	}
	if _, err := d2.c.Status(context.Background()); err != nil {
		t.Fatal(err)
	}
	d2.stop()

	// Missing: a new one.
	os.Remove(path)
	d3 := startDaemon(t, d.dir, nil)
	if d3.Token() == tok || len(d3.Token()) != 64 {
		t.Fatalf("token not regenerated: %q", d3.Token())
	}
	d3.stop()

	// Readable by others: refused, not silently used.
	os.Chmod(path, 0o644)
	if _, err := New(context.Background(), Config{DataDir: d.dir, ISCSIAddr: "127.0.0.1:0", Listen: "127.0.0.1:0"}); err == nil || !strings.Contains(err.Error(), "others may have read it") {
		t.Fatalf("world-readable token: %v", err)
	}
}

// The token never appears in the logs.
func TestTokenNotLogged(t *testing.T) {
	var logs syncbuf.Buffer
	d := startDaemon(t, "", policy(shopHCL), func(c *Config) { c.Logger = newTestLogger(&logs) })
	get(t, d, "/v1/status", "Bearer "+d.Token()+"x")
	d.c.Status(context.Background())
	d.stop()
	if strings.Contains(logs.String(), d.Token()) {
		t.Fatal("the token is in the logs")
	}
	if !strings.Contains(logs.String(), "api token created") || !strings.Contains(logs.String(), "missing or wrong token") {
		t.Fatalf("expected log lines missing:\n%s", logs.String())
	}
}

// mark on a service without apps, through the API: the marker protocol's
// class for it, recorded, listed, in the events and in /metrics.
func TestMarkServiceWithoutApps(t *testing.T) {
	d := startDaemon(t, "", policy(shopHCL))
	ctx := context.Background()
	m, err := d.c.Mark(ctx, "shop")
	if err != nil {
		t.Fatal(err)
	}
	// No app to quiesce: package marker records it crash-consistent with
	// the reason; no freeze window.
	if m.ID == "" || m.Class != catalog.ClassCrash || !strings.Contains(m.Reason, "no app") || m.FreezeWindow != 0 || len(m.Volumes) != 2 {
		t.Fatalf("marker: %+v", m)
	}
	if sm, ok := d.Store().Marker(m.ID); !ok || len(sm.Volumes) != 2 || sm.Volumes[0] != "shop/db" {
		t.Fatalf("journal marker: %+v %v", sm, ok)
	}
	ms, err := d.c.Markers(ctx, "shop", m.Time)
	if err != nil || len(ms) != 1 || ms[0].ID != m.ID {
		t.Fatalf("markers: %v %+v", err, ms)
	}
	if _, err := d.c.Mark(ctx, "nope"); !api.NotFound(err) {
		t.Fatalf("mark unknown service: %v", err)
	}
	if _, err := d.c.Markers(ctx, "nope", m.Time); !api.NotFound(err) {
		t.Fatalf("markers of unknown service: %v", err)
	}
	svcs, err := d.c.Services(ctx)
	if err != nil || len(svcs) != 1 || svcs[0].LastMarker == nil || svcs[0].LastMarker.ID != m.ID || svcs[0].LastApp != nil || svcs[0].Breached {
		t.Fatalf("services: %v %+v", err, svcs)
	}
	es, err := d.c.Events(ctx, "shop", m.Time.Add(-1))
	if err != nil {
		t.Fatal(err)
	}
	found := false
	for _, e := range es {
		found = found || e.Type == catalog.EventMarker && strings.Contains(e.Message, m.ID)
	}
	if !found {
		t.Fatalf("no marker event: %+v", es)
	}
	body := scrape(t, d)
	for _, want := range []string{`lockstep_markers_total{class="crash",service="shop"} 1`, `lockstep_service_rpo_target_seconds{service="shop"} 7200`,
		"lockstep_journal_bytes ", "lockstep_journal_cache_size_bytes ", `lockstep_journal_read_bytes_total{from="memory"}`,
		`lockstep_volume_journal_window_seconds{volume="shop/db"}`, `lockstep_marker_freeze_window_seconds_count{service="shop"} 1`} {
		if !strings.Contains(body, want) {
			t.Fatalf("/metrics lacks %q:\n%s", want, body)
		}
	}
	st, err := d.c.Status(ctx)
	if err != nil || st.Services != 1 || st.Volumes != 2 || st.Policy == nil || st.Policy.Version != 1 || st.Journal.Segments == 0 {
		t.Fatalf("status: %v %+v", err, st)
	}
}

// A restart without --policy serves the applied policy, its markers and
// its catalog as they were.
func TestRestartKeepsState(t *testing.T) {
	d := startDaemon(t, "", policy(shopHCL))
	ctx := context.Background()
	m, err := d.c.Mark(ctx, "shop")
	if err != nil {
		t.Fatal(err)
	}
	st1, _ := d.c.Status(ctx)
	d.stop()
	if _, err := os.Stat(filepath.Join(d.dir, api.AddrFile)); !os.IsNotExist(err) {
		t.Fatalf("api.addr left behind after stop: %v", err)
	}

	d2 := startDaemon(t, d.dir, nil)
	st2, err := d2.c.Status(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if st2.Policy == nil || st2.Policy.Version != st1.Policy.Version || st2.Policy.Hash != st1.Policy.Hash || st2.Services != 1 {
		t.Fatalf("status after restart: %+v, before %+v", st2.Policy, st1.Policy)
	}
	ms, err := d2.c.Markers(ctx, "shop", m.Time)
	if err != nil || len(ms) != 1 || ms[0].ID != m.ID || ms[0].Trigger != catalog.TriggerManual {
		t.Fatalf("markers after restart: %v %+v", err, ms)
	}
	vols, _ := d2.c.Volumes(ctx)
	if len(vols) != 2 || vols[0].IQN == "" {
		t.Fatalf("volumes after restart: %+v", vols)
	}
	// The CLI's way in: api.addr and api.token of the data directory.
	c, err := api.Locate("", "", d.dir)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := c.Services(ctx); err != nil {
		t.Fatal(err)
	}
	// Re-applying the same policy at start is no new version.
	d2.stop()
	d3 := startDaemon(t, d.dir, policy(shopHCL))
	st3, _ := d3.c.Status(ctx)
	if st3.Policy.Version != st1.Policy.Version {
		t.Fatalf("same policy at start made version %d", st3.Policy.Version)
	}
}

func TestUnreachableDaemon(t *testing.T) {
	_, err := api.New("127.0.0.1:1", "x").Status(context.Background())
	if !errors.Is(err, api.ErrUnreachable) || !strings.Contains(err.Error(), "lockstep serve") || !strings.Contains(err.Error(), "127.0.0.1:1") {
		t.Fatalf("unreachable: %v", err)
	}
}
