package daemon

import (
	"context"
	"errors"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/lockstep-io/lockstep/engine/store"
	"github.com/lockstep-io/lockstep/internal/syncbuf"
	"github.com/lockstep-io/lockstep/orchestrator/api"
	"github.com/lockstep-io/lockstep/policies/model"
)

// newTestLogger logs into logs, which the test reads while the daemon runs.
func newTestLogger(logs *syncbuf.Buffer) *slog.Logger {
	return slog.New(slog.NewTextHandler(logs, nil))
}

// shop with the db volume resized, the wal volume dropped, or a third added.
func shopWith(dbSize, walBlock string, extra string) string {
	s := strings.Replace(shopHCL, `size        = "64MiB"`, `size        = "`+dbSize+`"`, 1)
	if walBlock == "" {
		i := strings.Index(s, `  volume "wal"`)
		j := strings.Index(s, `  consistency`)
		s = s[:i] + s[j:]
	}
	return strings.Replace(s, "  consistency {", extra+"  consistency {", 1)
}

func mustPlan(t *testing.T, d *testDaemon, text string, allowDestroy bool) api.Plan {
	t.Helper()
	p, err := d.c.Plan(context.Background(), api.PlanRequest{Sources: policy(text), AllowDestroy: allowDestroy})
	if err != nil {
		t.Fatal(err)
	}
	return p
}

func hasLine(list []string, sub string) bool {
	for _, s := range list {
		if strings.Contains(s, sub) {
			return true
		}
	}
	return false
}

func TestPlanAndApply(t *testing.T) {
	d := startDaemon(t, "", nil)
	ctx := context.Background()

	// First apply: everything is new.
	p := mustPlan(t, d, shopHCL, false)
	if len(p.Refusals) != 0 || len(p.Volumes) != 2 || p.Volumes[0].Action != api.Create || len(p.Services) != 1 || p.Services[0].Action != api.Create {
		t.Fatalf("first plan: %+v", p)
	}
	if _, err := d.Store().Volume("shop/db"); err == nil {
		t.Fatal("plan created a volume")
	}
	res, err := d.c.Apply(ctx, api.PlanRequest{Sources: policy(shopHCL)})
	if err != nil || res.Policy.Version != 1 {
		t.Fatalf("apply: %v %+v", err, res)
	}
	if p := mustPlan(t, d, shopHCL, false); !p.Empty() || len(p.Refusals) != 0 {
		t.Fatalf("plan of the applied policy is not empty: %+v", p)
	}

	// Shrink: refused by plan and apply.
	p = mustPlan(t, d, shopWith("32MiB", "4096", ""), false)
	if !hasLine(p.Refusals, `volume "shop/db": shrinking from 64MiB to 32MiB is refused`) {
		t.Fatalf("shrink plan: %+v", p)
	}
	_, err = d.c.Apply(ctx, api.PlanRequest{Sources: policy(shopWith("32MiB", "4096", ""))})
	if err == nil || !strings.Contains(err.Error(), "shrinking") || !strings.Contains(err.Error(), "nothing changed") {
		t.Fatalf("apply shrink: %v", err)
	}
	// Growing is planned but the engine cannot do it yet.
	if p = mustPlan(t, d, shopWith("128MiB", "4096", ""), false); !hasLine(p.Refusals, "growing from 64MiB to 128MiB is not supported") {
		t.Fatalf("grow plan: %+v", p)
	}

	// Destroy: refused without --allow-destroy, named, nothing changed.
	noWAL := shopWith("64MiB", "", "")
	p = mustPlan(t, d, noWAL, false)
	if len(p.Volumes) != 1 || p.Volumes[0].Action != api.Destroy || !hasLine(p.Refusals, `volume "shop/wal" would be destroyed`) {
		t.Fatalf("destroy plan: %+v", p)
	}
	if _, err := d.c.Apply(ctx, api.PlanRequest{Sources: policy(noWAL)}); err == nil || !strings.Contains(err.Error(), "--allow-destroy") {
		t.Fatalf("apply destroy without --allow-destroy: %v", err)
	}
	if _, err := d.Store().Volume("shop/wal"); err != nil {
		t.Fatalf("refused destroy removed the volume: %v", err)
	}
	if st, _ := d.c.Status(ctx); st.Policy.Version != 1 {
		t.Fatalf("refused apply changed the policy version to %d", st.Policy.Version)
	}
	// An exposed volume cannot go even with --allow-destroy.
	e, err := d.c.Expose(ctx, api.ExposeRequest{Volume: "shop/wal", At: "-0s"})
	if err != nil {
		t.Fatal(err)
	}
	if p = mustPlan(t, d, noWAL, true); !hasLine(p.Refusals, "is exposed at") {
		t.Fatalf("destroy of an exposed volume: %+v", p)
	}
	if err := d.c.Unexpose(ctx, api.UnexposeRequest{IQN: e.IQN}); err != nil {
		t.Fatal(err)
	}
	res, err = d.c.Apply(ctx, api.PlanRequest{Sources: policy(noWAL), AllowDestroy: true})
	if err != nil || res.Policy.Version != 2 {
		t.Fatalf("apply --allow-destroy: %v %+v", err, res)
	}
	if _, err := d.Store().Volume("shop/wal"); !errors.Is(err, store.ErrNotFound) {
		t.Fatalf("destroyed volume still there: %v", err)
	}
	svcs, _ := d.c.Services(ctx)
	if len(svcs) != 1 || len(svcs[0].Volumes) != 1 {
		t.Fatalf("services after destroy: %+v", svcs)
	}

	// A target change is an update.
	chg := strings.Replace(noWAL, "iqn.2026-11.io.lockstep:shop.db", "iqn.2026-11.io.lockstep:shop.db2", 1)
	p = mustPlan(t, d, chg, false)
	if len(p.Volumes) != 1 || p.Volumes[0].Action != api.Update || !strings.Contains(p.Volumes[0].Detail, "shop.db2") {
		t.Fatalf("target change plan: %+v", p)
	}
	if _, err := d.c.Apply(ctx, api.PlanRequest{Sources: policy(chg)}); err != nil {
		t.Fatal(err)
	}
	vols, _ := d.c.Volumes(ctx)
	if vols[0].IQN != "iqn.2026-11.io.lockstep:shop.db2" {
		t.Fatalf("target not changed: %+v", vols)
	}

	// An invalid policy: plan says so with file:line, apply refuses.
	bad := strings.Replace(shopHCL, `every = "1h"`, `every = "3h"`, 1)
	p = mustPlan(t, d, bad, false)
	if !p.Invalid || !strings.Contains(p.Diagnostics, "RPO shorter than the schedule can meet") || !strings.Contains(p.Diagnostics, "test.lockstep.hcl:") {
		t.Fatalf("unmeetable RPO plan: %+v", p)
	}
	if _, err := d.c.Apply(ctx, api.PlanRequest{Sources: policy(bad)}); err == nil || !strings.Contains(err.Error(), "RPO shorter") {
		t.Fatalf("apply of an unmeetable RPO: %v", err)
	}
}

// The retention change lists exactly the markers it lets go, by GFS rules
// over the markers the journal holds.
func TestPlanRetentionExpiry(t *testing.T) {
	d := startDaemon(t, "", policy(shopHCL))
	ctx := context.Background()
	var ids []string
	for i := 0; i < 3; i++ {
		m, err := d.c.Mark(ctx, "shop")
		if err != nil {
			t.Fatal(err)
		}
		ids = append(ids, m.ID)
	}
	// A plan evaluated 3 hours later: with a 2h window and no keep rules,
	// every marker goes; with keep_hourly = 1 the newest stays.
	in := planInput{volumes: d.st.Volumes(), markers: d.st.Markers,
		lastApp: func(string) (time.Time, bool) { return time.Time{}, false }, now: time.Now().Add(3 * time.Hour)}
	newPol := func(r model.Retention) *model.Policy {
		s := *d.applied.pol.Services[0]
		s.Retention = r
		return &model.Policy{Services: []*model.Service{&s}}
	}
	in.old = newPol(model.Retention{Journal: 72 * time.Hour})
	in.new = newPol(model.Retention{Journal: 2 * time.Hour})
	p := computePlan(in)
	if len(p.Services) != 1 || len(p.Services[0].Expire) != 3 || !hasLine(p.Warnings, "3 marker(s) stop being restorable") {
		t.Fatalf("retention plan: %+v", p)
	}
	in.new = newPol(model.Retention{Journal: 2 * time.Hour, KeepHourly: 1})
	p = computePlan(in)
	if len(p.Services[0].Expire) != 2 || p.Services[0].Expire[0].ID != ids[0] || p.Services[0].Expire[1].ID != ids[1] {
		t.Fatalf("retention plan with keep_hourly: %+v", p.Services[0])
	}
	if !hasLine(p.Services[0].Changes, "retention.journal: 72h -> 2h") || !hasLine(p.Services[0].Changes, "retention.keep_hourly: 0 -> 1") {
		t.Fatalf("retention change not listed: %+v", p.Services[0].Changes)
	}
}

// An RPO the schedule cannot meet is refused by the plan itself too (for
// policies that do not come through the validator), and an RPO already
// breached by the newest marker's age is a warning.
func TestPlanRPO(t *testing.T) {
	svc := &model.Service{Name: "s", Volumes: []*model.Volume{{Name: "v", Size: 1 << 20, BlockSize: 4096}},
		Consistency: model.Consistency{Every: time.Hour, MaxGap: time.Hour}, RPO: model.RPO{Journal: 30 * time.Minute}}
	now := time.Now()
	in := planInput{new: &model.Policy{Services: []*model.Service{svc}}, markers: func(string) []store.Marker { return nil },
		lastApp: func(string) (time.Time, bool) { return now.Add(-2 * time.Hour), true }, now: now}
	p := computePlan(in)
	if !hasLine(p.Refusals, `service "s": the schedule (every 1h) leaves up to 1h between markers, longer than rpo.journal = 30m`) {
		t.Fatalf("unmeetable RPO: %+v", p.Refusals)
	}
	svc.RPO.Journal = 90 * time.Minute
	p = computePlan(in)
	if len(p.Refusals) != 0 || !hasLine(p.Warnings, "already older than rpo.journal = 1h30m") {
		t.Fatalf("breached RPO: %+v %+v", p.Refusals, p.Warnings)
	}
}

// An apply that fails at any step changes nothing: no new volume, the same
// targets, the same policy file, the same services in the orchestrator.
func TestApplyIsAtomic(t *testing.T) {
	d := startDaemon(t, "", policy(shopHCL))
	ctx := context.Background()
	polFile := filepath.Join(d.dir, PolicyFile)
	before, _ := os.ReadFile(polFile)
	volsBefore, _ := d.c.Volumes(ctx)
	next := shopWith("64MiB", "4096", `  volume "logs" {
    size = "8MiB"
  }
`)
	next = strings.Replace(next, "iqn.2026-11.io.lockstep:shop.wal", "iqn.2026-11.io.lockstep:shop.wal2", 1)
	next = strings.Replace(next, `every = "1h"`, `every = "30m"`, 1)
	for _, failAt := range []string{"create shop/logs", "target shop/logs", "target shop/wal", "persist", "orchestrator"} {
		seen := false
		d.setHook(func(step string) error {
			if step == failAt {
				seen = true
				return errors.New("injected failure at " + step)
			}
			return nil
		})
		_, err := d.c.Apply(ctx, api.PlanRequest{Sources: policy(next)})
		if !seen {
			t.Fatalf("step %q never ran", failAt)
		}
		if err == nil || !strings.Contains(err.Error(), "nothing changed") || !strings.Contains(err.Error(), "injected") {
			t.Fatalf("apply failing at %q: %v", failAt, err)
		}
		if _, err := d.Store().Volume("shop/logs"); !errors.Is(err, store.ErrNotFound) {
			t.Fatalf("failing at %q left the new volume: %v", failAt, err)
		}
		vols, _ := d.c.Volumes(ctx)
		if len(vols) != len(volsBefore) {
			t.Fatalf("failing at %q: volumes %+v, before %+v", failAt, vols, volsBefore)
		}
		for i := range vols {
			if vols[i].Name != volsBefore[i].Name || vols[i].IQN != volsBefore[i].IQN {
				t.Fatalf("failing at %q: volume %+v, before %+v", failAt, vols[i], volsBefore[i])
			}
		}
		after, _ := os.ReadFile(polFile)
		if string(after) != string(before) {
			t.Fatalf("failing at %q changed %s", failAt, PolicyFile)
		}
		svcs, _ := d.c.Services(ctx)
		if len(svcs) != 1 || svcs[0].Schedule != "every 1h" || len(svcs[0].Volumes) != 2 {
			t.Fatalf("failing at %q changed the orchestrator: %+v", failAt, svcs)
		}
		// The old targets still serve.
		if _, err := d.c.Expose(ctx, api.ExposeRequest{Volume: "shop/wal", At: "-0s"}); err != nil {
			t.Fatalf("failing at %q: %v", failAt, err)
		}
		for _, e := range d.Exposures() {
			d.Unexpose(ctx, e.IQN, false)
		}
	}
	d.setHook(nil)
	res, err := d.c.Apply(ctx, api.PlanRequest{Sources: policy(next)})
	if err != nil || res.Policy.Version != 2 {
		t.Fatalf("apply without failures: %v %+v", err, res)
	}
	svcs, _ := d.c.Services(ctx)
	if svcs[0].Schedule != "every 30m" || len(svcs[0].Volumes) != 3 {
		t.Fatalf("services after apply: %+v", svcs)
	}
}

// setHook installs an apply fault hook; applyMu orders it with applies.
func (d *Daemon) setHook(h func(step string) error) {
	d.applyMu.Lock()
	defer d.applyMu.Unlock()
	d.hook = h
}
