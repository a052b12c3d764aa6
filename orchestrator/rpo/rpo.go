// Package rpo evaluates each service's journal-tier RPO: the age of its
// newest application-consistent marker against the target. A breach opens an
// alert with its cause and start time; the alert closes, with its end time,
// once a new app-consistent marker satisfies the target. Time comes from an
// injected clock, so evaluation is tested without sleeping.
package rpo

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"net/url"
	"sort"
	"sync"
	"time"

	"github.com/lockstep-io/lockstep/engine/clock"
	"github.com/lockstep-io/lockstep/orchestrator/catalog"
	"github.com/lockstep-io/lockstep/policies/model"
)

// TierJournal is the only tier evaluated so far.
const TierJournal = "journal"

// State is one service's RPO as of its last evaluation.
type State struct {
	Service string        `json:"service"`
	Target  time.Duration `json:"target"`
	// Newest is the time of the newest app-consistent marker; zero when
	// the service has none.
	Newest time.Time `json:"newest,omitzero"`
	// Age is now minus Newest, or minus the time protection began when
	// there is no marker yet.
	Age       time.Duration  `json:"age"`
	Breached  bool           `json:"breached"`
	Alert     *catalog.Alert `json:"alert,omitempty"` // the open alert
	Evaluated time.Time      `json:"evaluated"`
}

// Notification is what a Notifier receives: an alert that opened or closed.
type Notification struct {
	Event string        `json:"event"` // catalog.EventRPOBreach or catalog.EventRPORecovered
	Alert catalog.Alert `json:"alert"`
}

// Notifier tells the outside world about alerts. Notify must return by the
// context's deadline; an error is logged and not retried.
type Notifier interface {
	Notify(ctx context.Context, n Notification) error
}

// Metrics receives every evaluation (a Prometheus gauge, say). It must not
// block.
type Metrics interface {
	ObserveRPO(s State)
}

// Evaluator evaluates services. It is safe for concurrent use.
type Evaluator struct {
	Catalog  catalog.Catalog
	Clock    clock.Clock
	Notifier Notifier // optional
	Metrics  Metrics  // optional
	Logger   *slog.Logger
	// NotifyTimeout bounds one notification (default 10 s).
	NotifyTimeout time.Duration

	mu     sync.Mutex
	since  map[string]time.Time // when protection of a service began
	states map[string]State
}

// Protect says protection of service began at t: with no marker, the age
// counts from t. Evaluate calls it with now for a service it has not seen.
// Calling it again keeps the earlier time.
func (e *Evaluator) Protect(service string, t time.Time) {
	e.mu.Lock()
	defer e.mu.Unlock()
	if e.since == nil {
		e.since = map[string]time.Time{}
	}
	if old, ok := e.since[service]; !ok || t.Before(old) {
		e.since[service] = t
	}
}

// Forget drops a service that is no longer in the policy. Its open alert,
// if any, stays open in the catalog until Close is called for it.
func (e *Evaluator) Forget(service string) {
	e.mu.Lock()
	delete(e.since, service)
	delete(e.states, service)
	e.mu.Unlock()
}

// States returns the last evaluation of every service, by name.
func (e *Evaluator) States() []State {
	e.mu.Lock()
	defer e.mu.Unlock()
	out := make([]State, 0, len(e.states))
	for _, s := range e.states {
		out = append(out, s)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Service < out[j].Service })
	return out
}

// State returns the last evaluation of service.
func (e *Evaluator) State(service string) (State, bool) {
	e.mu.Lock()
	defer e.mu.Unlock()
	s, ok := e.states[service]
	return s, ok
}

// Evaluate evaluates every service at the clock's now.
func (e *Evaluator) Evaluate(ctx context.Context, services []*model.Service) error {
	var errs []error
	for _, svc := range services {
		if err := e.evaluate(ctx, svc); err != nil {
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}

func (e *Evaluator) now() time.Time {
	if e.Clock == nil {
		return time.Now()
	}
	return e.Clock.Now()
}

func (e *Evaluator) log() *slog.Logger {
	if e.Logger == nil {
		return slog.New(slog.DiscardHandler)
	}
	return e.Logger
}

func (e *Evaluator) evaluate(ctx context.Context, svc *model.Service) error {
	now := e.now()
	target := svc.RPO.Journal
	e.Protect(svc.Name, now)
	e.mu.Lock()
	since := e.since[svc.Name]
	e.mu.Unlock()

	st := State{Service: svc.Name, Target: target, Evaluated: now}
	ref := since
	newest, err := e.Catalog.LatestMarker(ctx, svc.Name, catalog.ClassApp)
	switch {
	case err == nil:
		st.Newest, ref = newest.Time, newest.Time
	case errors.Is(err, catalog.ErrNotFound):
	default:
		return fmt.Errorf("rpo: service %q: %w", svc.Name, err)
	}
	st.Age = max(now.Sub(ref), 0)
	open, err := e.Catalog.Alerts(ctx, catalog.AlertFilter{Service: svc.Name, OpenOnly: true})
	if err != nil {
		return fmt.Errorf("rpo: service %q: %w", svc.Name, err)
	}
	var cur *catalog.Alert
	for i := range open {
		if open[i].Tier == TierJournal {
			cur = &open[i]
		}
	}

	if target > 0 && st.Age > target {
		st.Breached = true
		if cur == nil {
			a := catalog.Alert{Service: svc.Name, Tier: TierJournal, Target: target, Start: ref.Add(target)}
			a.Cause, a.Detail, err = e.cause(ctx, svc.Name, ref, now)
			if err != nil {
				return err
			}
			a, err = e.Catalog.OpenAlert(ctx, a)
			if err != nil {
				return fmt.Errorf("rpo: service %q: open alert: %w", svc.Name, err)
			}
			cur = &a
			e.announce(ctx, catalog.EventRPOBreach, catalog.Warning, a,
				fmt.Sprintf("service %q breaches its journal RPO of %s since %s (%s): %s", svc.Name, target, a.Start.Format(time.RFC3339), a.Cause, a.Detail))
		}
		c := *cur
		st.Alert = &c
	} else if cur != nil {
		// Satisfied again since the newest app marker (or, when the
		// target was raised, since now).
		end := now
		if !st.Newest.IsZero() && st.Newest.After(cur.Start) {
			end = st.Newest
		}
		a, err := e.Catalog.CloseAlert(ctx, cur.ID, end)
		if err != nil {
			return fmt.Errorf("rpo: service %q: close alert %s: %w", svc.Name, cur.ID, err)
		}
		e.announce(ctx, catalog.EventRPORecovered, catalog.Info, a,
			fmt.Sprintf("service %q meets its journal RPO of %s again (breach lasted %s)", svc.Name, target, a.End.Sub(a.Start).Round(time.Second)))
	}

	e.mu.Lock()
	if e.states == nil {
		e.states = map[string]State{}
	}
	e.states[svc.Name] = st
	e.mu.Unlock()
	if e.Metrics != nil {
		e.Metrics.ObserveRPO(st)
	}
	return nil
}

// cause says why no app-consistent marker was taken in (from, to]: the
// daemon was down, markers were taken but quiesce failed, or the schedule
// did not run them.
func (e *Evaluator) cause(ctx context.Context, service string, from, to time.Time) (string, string, error) {
	downs, err := e.Catalog.Downtimes(ctx, from)
	if err != nil {
		return "", "", fmt.Errorf("rpo: service %q: %w", service, err)
	}
	var down time.Duration
	for _, d := range downs {
		if d.Start.Before(to) && d.End.After(from) {
			down += minTime(d.End, to).Sub(maxTime(d.Start, from))
		}
	}
	if down > 0 {
		return catalog.CauseDaemonDown, fmt.Sprintf("the daemon was down for %s of the last %s", down.Round(time.Second), to.Sub(from).Round(time.Second)), nil
	}
	ms, err := e.Catalog.Markers(ctx, catalog.MarkerFilter{Service: service, Since: from})
	if err != nil {
		return "", "", fmt.Errorf("rpo: service %q: %w", service, err)
	}
	var failed []catalog.Marker
	for _, m := range ms {
		if m.Time.After(from) && (m.Class == catalog.ClassCrash || m.Class == catalog.ClassSkipped) {
			failed = append(failed, m)
		}
	}
	if len(failed) > 0 {
		last := failed[len(failed)-1]
		return catalog.CauseFailedQuiesce, fmt.Sprintf("%d marker(s) not application-consistent, the last: %s", len(failed), last.Reason), nil
	}
	evs, err := e.Catalog.Events(ctx, catalog.EventFilter{Service: service, Type: catalog.EventMissedSchedule, Since: from})
	if err != nil {
		return "", "", fmt.Errorf("rpo: service %q: %w", service, err)
	}
	if len(evs) > 0 {
		return catalog.CauseMissedSchedule, evs[len(evs)-1].Message, nil
	}
	return catalog.CauseMissedSchedule, "no marker was taken (the schedule is longer than the RPO, or markers fail before the fence)", nil
}

func minTime(a, b time.Time) time.Time {
	if a.Before(b) {
		return a
	}
	return b
}

func maxTime(a, b time.Time) time.Time {
	if a.After(b) {
		return a
	}
	return b
}

func (e *Evaluator) announce(ctx context.Context, typ, sev string, a catalog.Alert, msg string) {
	data, _ := json.Marshal(a)
	if _, err := e.Catalog.AddEvent(ctx, catalog.Event{Time: e.now(), Type: typ, Severity: sev, Service: a.Service, Message: msg, Data: data}); err != nil {
		e.log().Error("rpo: event not recorded", "service", a.Service, "err", err)
	}
	e.log().Warn("rpo", "event", typ, "service", a.Service, "cause", a.Cause, "start", a.Start, "end", a.End)
	if e.Notifier == nil {
		return
	}
	timeout := e.NotifyTimeout
	if timeout <= 0 {
		timeout = 10 * time.Second
	}
	nctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), timeout)
	defer cancel()
	if err := e.Notifier.Notify(nctx, Notification{Event: typ, Alert: a}); err != nil {
		e.log().Error("rpo: notification failed", "service", a.Service, "err", err)
	}
}

// Webhook POSTs each notification as JSON to URL. The body holds only the
// alert (service, cause, times), never a secret; errors name the webhook's
// host only, since its URL may carry a token.
type Webhook struct {
	URL    string
	Client *http.Client // http.DefaultClient when nil
}

var _ Notifier = (*Webhook)(nil)

// Notify implements Notifier.
func (w *Webhook) Notify(ctx context.Context, n Notification) error {
	host := "webhook"
	if u, err := url.Parse(w.URL); err == nil {
		host = u.Host
	}
	body, err := json.Marshal(n)
	if err != nil {
		return fmt.Errorf("rpo: webhook %s: %w", host, err)
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, w.URL, bytes.NewReader(body))
	if err != nil {
		return fmt.Errorf("rpo: webhook %s: bad url", host)
	}
	req.Header.Set("Content-Type", "application/json")
	c := w.Client
	if c == nil {
		c = http.DefaultClient
	}
	resp, err := c.Do(req)
	if err != nil {
		var ue *url.Error
		if errors.As(err, &ue) {
			err = ue.Err
		}
		return fmt.Errorf("rpo: webhook %s: %w", host, err)
	}
	resp.Body.Close()
	if resp.StatusCode/100 != 2 {
		return fmt.Errorf("rpo: webhook %s: status %s, want 2xx", host, resp.Status)
	}
	return nil
}
