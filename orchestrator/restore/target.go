package restore

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"regexp"
	"strconv"
	"strings"
	"time"

	"github.com/lockstep-io/lockstep/engine/store"
)

// Marker classes, as the engine records them.
const (
	ClassApp   = store.ClassApp
	ClassCrash = store.ClassCrash
)

// Marker is a consistency point of a service, as a restore sees it.
type Marker struct {
	ID      string `json:"id"`
	Service string `json:"service"`
	// TS is the marker's journal timestamp (Unix ns).
	TS    int64  `json:"ts"`
	Class string `json:"class"`
	// Evidence is what the marker means for the service's apps (JSON).
	Evidence json.RawMessage `json:"evidence,omitempty"`
}

// Time is TS as a time.
func (m Marker) Time() time.Time { return time.Unix(0, m.TS).UTC() }

// MarkerSource lists markers; the journal (StoreMarkers) or the catalog
// can back it.
type MarkerSource interface {
	// Markers lists the markers of service, oldest first.
	Markers(ctx context.Context, service string) ([]Marker, error)
}

// StoreMarkers is a MarkerSource backed by the journal's marker records.
type StoreMarkers struct{ Store *store.Store }

// Markers implements MarkerSource.
func (s StoreMarkers) Markers(ctx context.Context, service string) ([]Marker, error) {
	ms := s.Store.Markers(service)
	out := make([]Marker, 0, len(ms))
	for _, m := range ms {
		ev := json.RawMessage(m.Evidence)
		if len(m.Evidence) > 0 && !json.Valid(m.Evidence) {
			ev, _ = json.Marshal(string(m.Evidence))
		}
		out = append(out, Marker{ID: m.ID, Service: m.Service, TS: m.TS, Class: m.Class, Evidence: ev})
	}
	return out, nil
}

// Target names the point to restore to: a marker id, or a time.
type Target struct {
	// Marker is a marker id; when set, Time is ignored.
	Marker string
	// Time is the requested time. Without CrashConsistent the newest
	// application-consistent marker at or before it is chosen.
	Time time.Time
	// CrashConsistent restores to Time exactly: every write acknowledged
	// before it, none issued after.
	CrashConsistent bool
}

// Errors callers may test for.
var (
	ErrNoMarker   = errors.New("restore: no matching marker")
	ErrBadTime    = errors.New("restore: cannot read time")
	ErrInProgress = errors.New("restore: an unfinished restore exists")
	ErrNothingTo  = errors.New("restore: nothing to undo")
)

// point is a resolved target.
type point struct {
	TS     int64
	Marker *Marker
}

// resolve picks the point target names for service.
func resolve(ctx context.Context, src MarkerSource, service string, t Target, now int64) (point, error) {
	if t.Marker == "" && t.Time.IsZero() {
		return point{}, errors.New("restore: give a time or a marker id")
	}
	ms, err := src.Markers(ctx, service)
	if err != nil {
		return point{}, fmt.Errorf("restore: markers of service %q: %w", service, err)
	}
	if t.Marker != "" {
		for i := range ms {
			if ms[i].ID == t.Marker {
				return point{TS: ms[i].TS, Marker: &ms[i]}, nil
			}
		}
		return point{}, fmt.Errorf("%w: service %q has no marker %q (list them with `lockstep marker list %s`)", ErrNoMarker, service, t.Marker, service)
	}
	at := t.Time.UnixNano()
	if t.CrashConsistent {
		if at > now {
			return point{}, fmt.Errorf("restore: service %q: time %s is in the future", service, t.Time.Format(time.RFC3339Nano))
		}
		return point{TS: at}, nil
	}
	var best *Marker
	for i := range ms {
		if ms[i].Class == ClassApp && ms[i].TS <= at && (best == nil || ms[i].TS > best.TS) {
			best = &ms[i]
		}
	}
	if best == nil {
		return point{}, fmt.Errorf("%w: service %q has no application-consistent marker at or before %s (use --crash-consistent to restore to the exact time)", ErrNoMarker, service, t.Time.Format(time.RFC3339))
	}
	return point{TS: best.TS, Marker: best}, nil
}

var (
	relRe   = regexp.MustCompile(`^-\s*(\d+(?:\.\d+)?)\s*(d|days?)$`)
	agoRe   = regexp.MustCompile(`^(.+?)\s+ago$`)
	clockRe = regexp.MustCompile(`^(?:(today|yesterday)\s+)?(\d{1,2}):(\d{2})(?::(\d{2}))?$`)
)

// ParseTime reads a restore time: RFC 3339 ("2026-11-23T14:00:00Z"), a
// local date and time ("2026-11-23 14:00[:05]"), "now", a relative form
// ("-15m", "-1h30m", "-2d", "15m ago"), or a clock time today or yesterday
// ("14:00", "yesterday 14:00", in loc).
func ParseTime(s string, now time.Time, loc *time.Location) (time.Time, error) {
	if loc == nil {
		loc = time.Local
	}
	in := strings.TrimSpace(s)
	low := strings.ToLower(in)
	if low == "now" {
		return now, nil
	}
	for _, layout := range []string{time.RFC3339Nano, time.RFC3339} {
		if t, err := time.Parse(layout, in); err == nil {
			return t, nil
		}
	}
	for _, layout := range []string{"2006-01-02 15:04:05", "2006-01-02 15:04", "2006-01-02T15:04:05", "2006-01-02T15:04"} {
		if t, err := time.ParseInLocation(layout, in, loc); err == nil {
			return t, nil
		}
	}
	if m := agoRe.FindStringSubmatch(low); m != nil {
		low = "-" + strings.ReplaceAll(m[1], " ", "")
	}
	if m := relRe.FindStringSubmatch(low); m != nil {
		days, _ := strconv.ParseFloat(m[1], 64)
		return now.Add(-time.Duration(days * float64(24*time.Hour))), nil
	}
	if strings.HasPrefix(low, "-") {
		if d, err := time.ParseDuration(strings.ReplaceAll(low[1:], " ", "")); err == nil && d >= 0 {
			return now.Add(-d), nil
		}
	}
	if m := clockRe.FindStringSubmatch(low); m != nil {
		h, _ := strconv.Atoi(m[2])
		mi, _ := strconv.Atoi(m[3])
		sec := 0
		if m[4] != "" {
			sec, _ = strconv.Atoi(m[4])
		}
		if h < 24 && mi < 60 && sec < 60 {
			n := now.In(loc)
			day := n.Day()
			if m[1] == "yesterday" {
				day--
			}
			return time.Date(n.Year(), n.Month(), day, h, mi, sec, 0, loc), nil
		}
	}
	return time.Time{}, fmt.Errorf("%w %q: want RFC 3339 (2026-11-23T14:00:00Z), \"2026-11-23 14:00\", \"-15m\", \"-2d\", \"15m ago\", \"14:00\" or \"yesterday 14:00\"", ErrBadTime, s)
}
