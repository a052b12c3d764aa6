package demo

import (
	"bytes"
	"context"
	"encoding/json"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/lockstep-io/lockstep/internal/chain"
	"github.com/lockstep-io/lockstep/internal/testenv"
)

func TestDemo(t *testing.T) {
	if err := chain.Available(); err != nil {
		testenv.Unavailable(t, "%v", err)
	}
	if err := chain.PostgresAvailable(); err != nil {
		testenv.Unavailable(t, "%v", err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 4*time.Minute)
	defer cancel()
	var out bytes.Buffer
	res, err := Run(ctx, Options{Out: &out, RowsBefore: 500, RowsAfter: 77})
	t.Logf("demo output:\n%s", out.String())
	if err != nil {
		t.Fatal(err)
	}
	if !res.Verified {
		t.Fatal("not verified")
	}
	if res.MarkerRows != 500 || res.RestoredRows != 500 || res.RowsBeforeDamage != 577 {
		t.Fatalf("rows: marker %d restored %d before damage %d, want 500 500 577", res.MarkerRows, res.RestoredRows, res.RowsBeforeDamage)
	}
	if res.RestoredDigest != res.MarkerDigest || res.MarkerDigest == "" {
		t.Fatalf("digest %q, marker %q", res.RestoredDigest, res.MarkerDigest)
	}
	var ev Evidence
	if err := json.Unmarshal(res.Marker.Evidence, &ev); err != nil {
		t.Fatalf("evidence %q: %v", res.Marker.Evidence, err)
	}
	if ev.Rows != 500 || !strings.Contains(ev.PostgresLSN, "/") {
		t.Fatalf("evidence %+v", ev)
	}
	if res.Marker.Class != "app" || res.BytesRolledBack <= 0 || !res.RPOMet || res.Segments == 0 || res.JournalBytes == 0 {
		t.Fatalf("result %+v", res)
	}
	if res.Reconnects != 0 {
		t.Fatalf("%d iSCSI reconnects", res.Reconnects)
	}
	for _, want := range []string{"Lockstep demo report", "postgres_lsn", "RPO", "journal"} {
		if !strings.Contains(out.String(), want) {
			t.Errorf("output lacks %q", want)
		}
	}
	if _, err := os.Stat(res.Dir); !os.IsNotExist(err) {
		t.Errorf("temporary directory %s left behind: %v", res.Dir, err)
	}
}
