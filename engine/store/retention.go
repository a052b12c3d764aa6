package store

import (
	"context"
	"time"

	"github.com/lockstep-io/lockstep/engine/retention"
)

// FoldService folds the volumes of one service by its retention policy: the
// journal window becomes p.Window, and the markers the keep rules select stay
// restorable beyond it.
func (s *Store) FoldService(ctx context.Context, service string, volumes []string, now time.Time, p retention.Policy) (*FoldReport, retention.Decision, error) {
	var pts []retention.Point
	for _, m := range s.Markers(service) {
		pts = append(pts, retention.Point{ID: m.ID, TS: m.TS, App: m.Class == ClassApp})
	}
	d := retention.Decide(now, p, pts)
	keep := make([]int64, 0, len(d.Keep))
	for _, k := range d.Keep {
		keep = append(keep, k.TS)
	}
	plans := map[string]FoldPlan{}
	for _, v := range volumes {
		plans[v] = FoldPlan{Through: d.Through, Keep: keep}
	}
	rep, err := s.Fold(ctx, plans)
	return rep, d, err
}
