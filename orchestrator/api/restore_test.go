package api

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
)

// The client's side of a restore stream: progress in order, the final
// line's record and error, a stream cut short, and an error before it.
func TestRestoreStream(t *testing.T) {
	var body string
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Header.Get("Authorization") != "Bearer tok" {
			w.WriteHeader(http.StatusUnauthorized)
			return
		}
		if strings.HasSuffix(r.URL.Path, "/undo") {
			w.WriteHeader(http.StatusNotFound)
			fmt.Fprintln(w, `{"error": "no service \"x\""}`)
			return
		}
		w.Header().Set("Content-Type", "application/x-ndjson")
		fmt.Fprint(w, body)
	}))
	defer srv.Close()
	c := New(strings.TrimPrefix(srv.URL, "http://"), "tok")
	ctx := context.Background()

	body = `{"progress":{"step":"stop","object":"web","n":1,"total":3}}
{"progress":{"step":"stop","object":"web","done":true,"outcome":"ok","n":1,"total":3}}
{"final":true,"record":{"id":"r-1","state":"failed","service":"shop"},"error":"failed at start"}
`
	var got []string
	res, err := c.Restore(ctx, "shop", RestoreRequest{Marker: "m-1"}, func(p RestoreProgress) {
		got = append(got, fmt.Sprintf("%s %s %v", p.Step, p.Object, p.Done))
	})
	if !errors.Is(err, ErrRestoreFailed) || err.Error() != "failed at start" || res.Record == nil || res.Record.ID != "r-1" {
		t.Fatalf("failed restore: %v %+v", err, res)
	}
	if strings.Join(got, "|") != "stop web false|stop web true" {
		t.Fatalf("progress: %v", got)
	}

	body = `{"progress":{"step":"stop","n":1,"total":3}}` + "\n"
	if _, err := c.Resume(ctx, "r-1", nil); err == nil || !strings.Contains(err.Error(), "lockstep restores") {
		t.Fatalf("cut stream: %v", err)
	}
	if _, err := c.Undo(ctx, "x", nil); !NotFound(err) {
		t.Fatalf("error before the stream: %v", err)
	}
	if _, err := New(c.Addr(), "wrong").Resume(ctx, "r-1", nil); !errors.Is(err, ErrUnauthorized) {
		t.Fatalf("wrong token: %v", err)
	}
}
