package daemon

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"strings"
	"time"

	"github.com/lockstep-io/lockstep/engine/store"
	"github.com/lockstep-io/lockstep/orchestrator/api"
	"github.com/lockstep-io/lockstep/orchestrator/catalog"
)

// maxBody bounds a request body: policy directories are small.
const maxBody = 8 << 20

// handler is the API, /metrics included, behind the token check.
func (d *Daemon) handler() http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("GET /v1/status", d.getStatus)
	mux.HandleFunc("GET /v1/services", func(w http.ResponseWriter, r *http.Request) {
		s, err := d.prot.Services(r.Context())
		reply(w, s, err)
	})
	mux.HandleFunc("GET /v1/services/{service}/markers", d.getMarkers)
	mux.HandleFunc("POST /v1/services/{service}/mark", func(w http.ResponseWriter, r *http.Request) {
		m, err := d.prot.Mark(r.Context(), r.PathValue("service"))
		if err != nil && m.ID == "" {
			reply(w, nil, err)
			return
		}
		// A skipped marker or a catalog failure still returns the record.
		reply(w, api.NewMarker(m), nil)
	})
	mux.HandleFunc("GET /v1/events", d.getEvents)
	mux.HandleFunc("GET /v1/volumes", func(w http.ResponseWriter, r *http.Request) { reply(w, d.Volumes(), nil) })
	mux.HandleFunc("GET /v1/exposures", func(w http.ResponseWriter, r *http.Request) { reply(w, d.Exposures(), nil) })
	mux.HandleFunc("POST /v1/expose", func(w http.ResponseWriter, r *http.Request) {
		var req api.ExposeRequest
		if !decode(w, r, &req) {
			return
		}
		e, err := d.Expose(r.Context(), req)
		reply(w, e, err)
	})
	mux.HandleFunc("POST /v1/unexpose", func(w http.ResponseWriter, r *http.Request) {
		var req api.UnexposeRequest
		if !decode(w, r, &req) {
			return
		}
		reply(w, map[string]string{"removed": req.IQN}, d.Unexpose(r.Context(), req.IQN, req.Keep))
	})
	mux.HandleFunc("POST /v1/plan", func(w http.ResponseWriter, r *http.Request) {
		var req api.PlanRequest
		if !decode(w, r, &req) {
			return
		}
		p, err := d.Plan(r.Context(), req.Sources, req.AllowDestroy)
		reply(w, p, err)
	})
	mux.HandleFunc("POST /v1/apply", func(w http.ResponseWriter, r *http.Request) {
		var req api.PlanRequest
		if !decode(w, r, &req) {
			return
		}
		res, err := d.Apply(r.Context(), req.Sources, req.AllowDestroy)
		reply(w, res, err)
	})
	d.restoreRoutes(mux)
	d.foldRoutes(mux)
	mux.Handle("GET /metrics", d.metrics.handler())
	// Agents (agents.go); enrolment is authenticated by its token's MAC,
	// not by the API token.
	d.agentRoutes(mux)
	return d.agentEnrollRoute(d.authenticate(mux))
}

// authenticate lets a request through only with the daemon's token. The
// token is compared in constant time and never logged; /metrics needs it
// too (Prometheus sends it with authorization.credentials_file), because
// service names, volume sizes and RPO ages are not for everyone who can
// reach the port.
func (d *Daemon) authenticate(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		got, ok := strings.CutPrefix(r.Header.Get("Authorization"), "Bearer ")
		if !ok || !api.TokenEqual(strings.TrimSpace(got), d.token) {
			d.log.Warn("api request refused: missing or wrong token", "method", r.Method, "path", r.URL.Path, "remote", r.RemoteAddr)
			w.Header().Set("WWW-Authenticate", `Bearer realm="lockstep"`)
			writeJSON(w, http.StatusUnauthorized, api.Error{Error: "missing or wrong API token"})
			return
		}
		next.ServeHTTP(w, r)
	})
}

func (d *Daemon) serveAPI(ctx context.Context, l net.Listener) error {
	srv := &http.Server{Handler: d.handler(), ReadHeaderTimeout: 10 * time.Second,
		BaseContext: func(net.Listener) context.Context { return ctx },
		// Failed TLS handshakes and the like go to the daemon's log.
		ErrorLog: slog.NewLogLogger(d.log.Handler(), slog.LevelWarn)}
	done := make(chan struct{})
	go func() {
		defer close(done)
		<-ctx.Done()
		sctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 10*time.Second)
		defer cancel()
		srv.Shutdown(sctx)
	}()
	err := srv.Serve(l)
	<-done
	if errors.Is(err, http.ErrServerClosed) {
		return nil
	}
	return err
}

func (d *Daemon) getStatus(w http.ResponseWriter, r *http.Request) {
	s := api.Status{Version: Version, DataDir: d.cfg.DataDir, Listen: d.Addr(), Portal: d.Portal(), Started: d.started.UTC(),
		Volumes: len(d.st.Volumes()), Exposures: len(d.Exposures()), Orchestrator: d.prot.Kind(), Journal: d.journalStatus()}
	svcs, err := d.prot.Services(r.Context())
	if err != nil {
		reply(w, nil, err)
		return
	}
	s.Services = len(svcs)
	for _, x := range svcs {
		if x.Breached {
			s.OpenAlerts++
		}
	}
	d.mu.Lock()
	if d.applied != nil {
		s.Policy = d.applied.info()
	}
	d.mu.Unlock()
	reply(w, s, nil)
}

func (d *Daemon) journalStatus() api.JournalStatus {
	j := d.st.Journal()
	js := api.JournalStatus{LastSeq: j.LastSeq()}
	for _, seg := range j.Segments() {
		js.Segments++
		js.Bytes += seg.Size
	}
	if ts := j.LastTS(); ts > 0 {
		js.Newest = time.Unix(0, ts).UTC()
	}
	var oldest int64
	for _, vi := range d.st.Volumes() {
		if vi.Parent == "" && (oldest == 0 || vi.FoldThrough < oldest) {
			oldest = vi.FoldThrough
		}
	}
	if oldest > 0 {
		js.Oldest = time.Unix(0, oldest).UTC()
	}
	return js
}

func (d *Daemon) getMarkers(w http.ResponseWriter, r *http.Request) {
	svc := r.PathValue("service")
	since, err := parseSince(d.clk.Now(), r.URL.Query().Get("since"))
	if err != nil {
		reply(w, nil, err)
		return
	}
	ms, err := d.prot.Markers(r.Context(), svc, since)
	out := make([]api.Marker, 0, len(ms))
	for _, m := range ms {
		out = append(out, api.NewMarker(m))
	}
	reply(w, out, err)
}

func (d *Daemon) getEvents(w http.ResponseWriter, r *http.Request) {
	q := r.URL.Query()
	since, err := parseSince(d.clk.Now(), q.Get("since"))
	if err != nil {
		reply(w, nil, err)
		return
	}
	es, err := d.prot.Events(r.Context(), catalog.EventFilter{Service: q.Get("service"), Since: since, Limit: 1000})
	if es == nil {
		es = []catalog.Event{}
	}
	reply(w, es, err)
}

// parseSince reads ?since=: RFC 3339 or a duration back from now ("1h").
func parseSince(now time.Time, s string) (time.Time, error) {
	if s == "" {
		return time.Time{}, nil
	}
	if d, err := time.ParseDuration(strings.TrimPrefix(s, "-")); err == nil {
		return now.Add(-d), nil
	}
	t, err := time.Parse(time.RFC3339Nano, s)
	if err != nil {
		return time.Time{}, fmt.Errorf("since %q: want a duration (24h) or an RFC 3339 time (2026-11-23T14:00:00Z)", s)
	}
	return t, nil
}

func decode(w http.ResponseWriter, r *http.Request, v any) bool {
	if err := json.NewDecoder(io.LimitReader(r.Body, maxBody)).Decode(v); err != nil {
		writeJSON(w, http.StatusBadRequest, api.Error{Error: fmt.Sprintf("bad request body: %v", err)})
		return false
	}
	return true
}

// reply writes v, or err with a status chosen from what it wraps.
func reply(w http.ResponseWriter, v any, err error) {
	if err == nil {
		writeJSON(w, http.StatusOK, v)
		return
	}
	code := http.StatusBadRequest
	switch {
	case errors.Is(err, errNotFound), errors.Is(err, store.ErrNotFound):
		code = http.StatusNotFound
	case errors.Is(err, errRefused):
		code = http.StatusConflict
	case errors.Is(err, errInvalid):
		code = http.StatusUnprocessableEntity
	}
	writeJSON(w, code, api.Error{Error: err.Error()})
}

func writeJSON(w http.ResponseWriter, code int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(code)
	json.NewEncoder(w).Encode(v)
}
