package daemon

import (
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/lockstep-io/lockstep/engine/clock"
	"github.com/lockstep-io/lockstep/internal/syncbuf"
	"github.com/lockstep-io/lockstep/orchestrator/catalog"
	"github.com/lockstep-io/lockstep/orchestrator/rpo"
)

// The daemon's RPO webhook (serve --rpo-webhook) is called when a service
// breaches: shopHCL's service has no app, so its markers are crash
// markers, and two hours without an application-consistent one breach its
// journal RPO.
func TestRPOWebhook(t *testing.T) {
	var mu sync.Mutex
	var got []rpo.Notification
	hook := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		b, _ := io.ReadAll(r.Body)
		var n rpo.Notification
		if err := json.Unmarshal(b, &n); err != nil {
			t.Errorf("webhook body %q: %v", b, err)
		}
		mu.Lock()
		got = append(got, n)
		mu.Unlock()
	}))
	defer hook.Close()
	clk := clock.NewFake(time.Now())
	logs := &syncbuf.Buffer{}
	d := startDaemon(t, "", policy(shopHCL), func(c *Config) {
		c.Clock = clk
		c.RPOWebhook = hook.URL + "/alerts?token=hunter2-secret"
		c.Logger = newTestLogger(logs)
	})
	clk.Advance(3 * time.Hour)
	deadline := time.Now().Add(20 * time.Second)
	for {
		mu.Lock()
		n := len(got)
		mu.Unlock()
		if n > 0 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("no webhook call 3 h after the last application-consistent marker")
		}
		time.Sleep(50 * time.Millisecond)
	}
	mu.Lock()
	n := got[0]
	mu.Unlock()
	if n.Event != catalog.EventRPOBreach || n.Alert.Service != "shop" || n.Alert.Cause == "" || !n.Alert.Open() {
		t.Fatalf("webhook notification %+v", n)
	}
	d.stop()
	if strings.Contains(logs.String(), "hunter2-secret") {
		t.Fatal("the webhook's token reached the log")
	}
}
