package restore

import (
	"context"
	"errors"
	"testing"
	"time"
)

func TestParseTime(t *testing.T) {
	loc := time.FixedZone("X", 3600)
	now := time.Date(2026, 11, 23, 17, 30, 0, 0, time.UTC)
	for _, c := range []struct {
		in   string
		want time.Time
	}{
		{"2026-11-23T14:00:00Z", time.Date(2026, 11, 23, 14, 0, 0, 0, time.UTC)},
		{"2026-11-23T14:00:00.5+02:00", time.Date(2026, 11, 23, 12, 0, 0, 5e8, time.UTC)},
		{"2026-11-23 14:00", time.Date(2026, 11, 23, 14, 0, 0, 0, loc)},
		{"2026-11-23 14:00:05", time.Date(2026, 11, 23, 14, 0, 5, 0, loc)},
		{"now", now},
		{"-15m", now.Add(-15 * time.Minute)},
		{"- 1h30m", now.Add(-90 * time.Minute)},
		{"-2d", now.Add(-48 * time.Hour)},
		{"15m ago", now.Add(-15 * time.Minute)},
		{"2 days ago", now.Add(-48 * time.Hour)},
		{"14:00", time.Date(2026, 11, 23, 14, 0, 0, 0, loc)},
		{"yesterday 14:00", time.Date(2026, 11, 22, 14, 0, 0, 0, loc)},
		{"today 09:15:30", time.Date(2026, 11, 23, 9, 15, 30, 0, loc)},
	} {
		got, err := ParseTime(c.in, now, loc)
		if err != nil {
			t.Errorf("%q: %v", c.in, err)
			continue
		}
		if !got.Equal(c.want) {
			t.Errorf("%q: %s, want %s", c.in, got, c.want)
		}
	}
	for _, bad := range []string{"", "soon", "-15x", "25:00", "yesterday", "+15m"} {
		if _, err := ParseTime(bad, now, loc); !errors.Is(err, ErrBadTime) {
			t.Errorf("%q: %v, want ErrBadTime", bad, err)
		}
	}
}

type markers []Marker

func (m markers) Markers(context.Context, string) ([]Marker, error) { return m, nil }

func TestResolve(t *testing.T) {
	ms := markers{
		{ID: "a", TS: 100, Class: ClassApp},
		{ID: "c", TS: 200, Class: ClassCrash},
		{ID: "b", TS: 300, Class: ClassApp},
	}
	ctx := context.Background()
	for _, c := range []struct {
		t      Target
		ts     int64
		marker string
		err    error
	}{
		{Target{Time: time.Unix(0, 250)}, 100, "a", nil},
		{Target{Time: time.Unix(0, 300)}, 300, "b", nil},
		{Target{Time: time.Unix(0, 99)}, 0, "", ErrNoMarker},
		{Target{Time: time.Unix(0, 250), CrashConsistent: true}, 250, "", nil},
		{Target{Marker: "c"}, 200, "c", nil},
		{Target{Marker: "z"}, 0, "", ErrNoMarker},
	} {
		p, err := resolve(ctx, ms, "s", c.t, 1000)
		if !errors.Is(err, c.err) {
			t.Errorf("%+v: %v, want %v", c.t, err, c.err)
			continue
		}
		if err != nil {
			continue
		}
		id := ""
		if p.Marker != nil {
			id = p.Marker.ID
		}
		if p.TS != c.ts || id != c.marker {
			t.Errorf("%+v: ts %d marker %q, want %d %q", c.t, p.TS, id, c.ts, c.marker)
		}
	}
	if _, err := resolve(ctx, ms, "s", Target{Time: time.Unix(0, 2000), CrashConsistent: true}, 1000); err == nil {
		t.Error("a crash-consistent time in the future was accepted")
	}
}
