package catalog

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"sort"
	"time"

	"github.com/lockstep-io/lockstep/engine/store"
)

// ReconcileReport says what Reconcile changed.
type ReconcileReport struct {
	Added   []string `json:"added"`   // journal markers the catalog lacked
	Expired []string `json:"expired"` // catalog markers whose journal record is gone
}

// Reconcile makes the catalog agree with the markers the journal holds
// (store.Store.Markers("")), as the daemon does at start. A journal marker the
// catalog lacks (the daemon crashed between the fence and the record) is
// added with trigger "reconcile", the class and evidence of its journal
// record, and a "reconciled" event. A restorable catalog marker whose journal
// record is gone is set to StateExpired with a "marker_expired" event. A
// marker in both keeps its catalog record: the catalog may know better (a
// hold that expired before the fence downgrades app to crash there only).
// Running it twice changes nothing the second time. It works on any Catalog.
func Reconcile(ctx context.Context, c Catalog, journal []store.Marker, now time.Time) (ReconcileReport, error) {
	var rep ReconcileReport
	for _, jm := range journal {
		_, err := c.Marker(ctx, jm.ID)
		if err == nil {
			continue
		}
		if !errors.Is(err, ErrNotFound) {
			return rep, fmt.Errorf("catalog: reconcile marker %s: %w", jm.ID, err)
		}
		m := FromJournal(jm)
		if err := c.PutMarker(ctx, m); err != nil {
			return rep, fmt.Errorf("catalog: reconcile marker %s: %w", jm.ID, err)
		}
		data, _ := json.Marshal(map[string]any{"id": m.ID, "class": m.Class})
		if _, err := c.AddEvent(ctx, Event{Time: now, Type: EventReconciled, Severity: Warning, Service: m.Service, Data: data,
			Message: fmt.Sprintf("marker %s of service %q found in the journal but not in the catalog; added (its timings are unknown)", m.ID, m.Service)}); err != nil {
			return rep, fmt.Errorf("catalog: reconcile: %w", err)
		}
		rep.Added = append(rep.Added, m.ID)
	}
	expired, err := ExpireGone(ctx, c, journal, now)
	for _, m := range expired {
		rep.Expired = append(rep.Expired, m.ID)
	}
	if err != nil {
		return rep, err
	}
	sort.Strings(rep.Added)
	sort.Strings(rep.Expired)
	return rep, nil
}

// ExpireGone is the second half of Reconcile, safe to run while markers are
// being taken (a marker reaches the journal before the catalog): every
// restorable catalog marker whose journal record is gone is set to
// StateExpired with a "marker_expired" event. It returns the markers it
// expired, as now recorded.
func ExpireGone(ctx context.Context, c Catalog, journal []store.Marker, now time.Time) ([]Marker, error) {
	inJournal := make(map[string]bool, len(journal))
	for _, jm := range journal {
		inJournal[jm.ID] = true
	}
	all, err := c.Markers(ctx, MarkerFilter{})
	if err != nil {
		return nil, fmt.Errorf("catalog: reconcile: %w", err)
	}
	var out []Marker
	for _, m := range all {
		if !m.Restorable() || inJournal[m.ID] {
			continue
		}
		m.State = StateExpired
		if err := c.PutMarker(ctx, m); err != nil {
			return out, fmt.Errorf("catalog: reconcile marker %s: %w", m.ID, err)
		}
		data, _ := json.Marshal(map[string]any{"id": m.ID, "class": m.Class})
		if _, err := c.AddEvent(ctx, Event{Time: now, Type: EventMarkerExpired, Severity: Info, Service: m.Service, Data: data,
			Message: fmt.Sprintf("marker %s of service %q is no longer in the journal (retention or volume removal); kept as expired", m.ID, m.Service)}); err != nil {
			return out, fmt.Errorf("catalog: reconcile: %w", err)
		}
		out = append(out, m)
	}
	return out, nil
}

// FromJournal builds a catalog marker from a journal marker record. The
// record's Evidence is the JSON object of each app's evidence by app name
// (package marker writes it so).
func FromJournal(jm store.Marker) Marker {
	m := Marker{ID: jm.ID, Service: jm.Service, Time: time.Unix(0, jm.TS).UTC(), Seq: jm.Seq, Class: jm.Class,
		Trigger: TriggerReconcile, State: StatePresent, Volumes: append([]string(nil), jm.Volumes...)}
	var ev map[string]json.RawMessage
	if len(jm.Evidence) > 0 && json.Unmarshal(jm.Evidence, &ev) == nil {
		names := make([]string, 0, len(ev))
		for n := range ev {
			names = append(names, n)
		}
		sort.Strings(names)
		for _, n := range names {
			m.Apps = append(m.Apps, AppResult{App: n, Froze: true, Evidence: ev[n]})
		}
	}
	return m
}
