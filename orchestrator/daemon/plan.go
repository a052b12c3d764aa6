package daemon

import (
	"encoding/json"
	"fmt"
	"slices"
	"sort"
	"time"

	"github.com/lockstep-io/lockstep/engine/iscsi"
	"github.com/lockstep-io/lockstep/engine/retention"
	"github.com/lockstep-io/lockstep/engine/store"
	"github.com/lockstep-io/lockstep/orchestrator/api"
	"github.com/lockstep-io/lockstep/policies/model"
)

// planInput is everything a plan compares: the applied policy, the policy
// to apply, and what the data directory really holds.
type planInput struct {
	old, new     *model.Policy // old is nil before the first apply
	volumes      []store.VolumeInfo
	targets      map[string]iscsi.TargetConfig // live targets by volume
	exposures    []api.Exposure
	markers      func(service string) []store.Marker
	lastApp      func(service string) (time.Time, bool)
	now          time.Time
	allowDestroy bool
}

// computePlan says what applying in.new would change. It is pure: the
// apply executes exactly the plan it returns, after checking Refusals.
func computePlan(in planInput) *api.Plan {
	p := &api.Plan{Volumes: []api.VolumeChange{}, Services: []api.ServiceChange{}, Warnings: []string{}, Refusals: []string{}}
	have := map[string]store.VolumeInfo{}
	for _, vi := range in.volumes {
		have[vi.Name] = vi
	}
	want := map[string]bool{}
	for _, s := range in.new.Services {
		for _, v := range s.Volumes {
			name := VolumeName(s.Name, v.Name)
			want[name] = true
			vi, ok := have[name]
			if !ok {
				p.Volumes = append(p.Volumes, api.VolumeChange{Action: api.Create, Service: s.Name, Volume: name, NewSize: v.Size,
					Detail: fmt.Sprintf("%s in %d-byte blocks, target %s", sizeString(v.Size), v.BlockSize, v.TargetName)})
				continue
			}
			if vi.BlockSize != v.BlockSize {
				p.Refusals = append(p.Refusals, fmt.Sprintf("volume %q: the block size cannot change from %d to %d; a volume with another block size is a new volume (remove this one with --allow-destroy first)", name, vi.BlockSize, v.BlockSize))
			}
			switch {
			case v.Size < vi.Size:
				p.Volumes = append(p.Volumes, api.VolumeChange{Action: api.Resize, Service: s.Name, Volume: name, OldSize: vi.Size, NewSize: v.Size})
				p.Refusals = append(p.Refusals, fmt.Sprintf("volume %q: shrinking from %s to %s is refused: the data past %s would be lost; keep size = %q", name, sizeString(vi.Size), sizeString(v.Size), sizeString(v.Size), sizeString(vi.Size)))
			case v.Size > vi.Size:
				p.Volumes = append(p.Volumes, api.VolumeChange{Action: api.Resize, Service: s.Name, Volume: name, OldSize: vi.Size, NewSize: v.Size})
				p.Refusals = append(p.Refusals, fmt.Sprintf("volume %q: growing from %s to %s is not supported by the journal engine yet; keep size = %q for now", name, sizeString(vi.Size), sizeString(v.Size), sizeString(vi.Size)))
			}
			if detail := targetDiff(in.targets[name], targetConfig(s, v)); detail != "" {
				p.Volumes = append(p.Volumes, api.VolumeChange{Action: api.Update, Service: s.Name, Volume: name, Detail: detail})
			}
		}
	}
	for _, vi := range in.volumes {
		if want[vi.Name] || vi.Parent != "" {
			continue
		}
		svc, _ := splitVolume(vi.Name)
		p.Volumes = append(p.Volumes, api.VolumeChange{Action: api.Destroy, Service: svc, Volume: vi.Name, OldSize: vi.Size})
		if !in.allowDestroy {
			p.Refusals = append(p.Refusals, fmt.Sprintf("volume %q would be destroyed with its whole journal history; run apply with --allow-destroy to confirm", vi.Name))
		}
		for _, e := range in.exposures {
			if e.Volume == vi.Name {
				p.Refusals = append(p.Refusals, fmt.Sprintf("volume %q is exposed at %s as %s; remove it first with `lockstep volume unexpose %s`", vi.Name, e.At.Format(time.RFC3339), e.IQN, e.IQN))
			}
		}
		for _, c := range in.volumes {
			if c.Parent == vi.Name && !exposedClone(in.exposures, c.Name) {
				p.Refusals = append(p.Refusals, fmt.Sprintf("volume %q has the clone %q; delete the clone first", vi.Name, c.Name))
			}
		}
	}

	oldSvc := map[string]*model.Service{}
	if in.old != nil {
		for _, s := range in.old.Services {
			oldSvc[s.Name] = s
		}
	}
	for _, s := range in.new.Services {
		o := oldSvc[s.Name]
		delete(oldSvc, s.Name)
		sc := api.ServiceChange{Service: s.Name}
		if o == nil {
			sc.Action = api.Create
			sc.Changes = []string{"schedule: " + scheduleString(s.Consistency), "rpo.journal: " + model.FormatDuration(s.RPO.Journal), "retention: " + retentionString(s.Retention)}
		} else {
			sc.Action = api.Update
			sc.Changes = serviceDiff(o, s)
		}
		if o == nil || o.Retention != s.Retention {
			sc.Expire = expiring(in, o, s)
			if len(sc.Expire) > 0 {
				p.Warnings = append(p.Warnings, fmt.Sprintf("service %q: %d marker(s) stop being restorable at the next retention fold under the new retention", s.Name, len(sc.Expire)))
			}
		}
		if sc.Action == api.Create || len(sc.Changes) > 0 || len(sc.Expire) > 0 {
			p.Services = append(p.Services, sc)
		}
		rpoChecks(p, in, s)
	}
	var gone []string
	for name := range oldSvc {
		gone = append(gone, name)
	}
	sort.Strings(gone)
	for _, name := range gone {
		sc := api.ServiceChange{Action: api.Destroy, Service: name}
		if n := len(in.markers(name)); n > 0 {
			sc.Changes = []string{fmt.Sprintf("its schedule stops; its %d marker(s) go with its volumes", n)}
		}
		p.Services = append(p.Services, sc)
	}
	return p
}

// rpoChecks finds RPO targets the new policy cannot meet. The policy
// validator already rejects an RPO shorter than the schedule's longest
// gap; the plan repeats the check (policies built in code reach it too)
// and adds what only the running daemon knows: how old the newest
// application-consistent marker already is.
func rpoChecks(p *api.Plan, in planInput, s *model.Service) {
	c, rpo := s.Consistency, s.RPO.Journal
	if rpo <= 0 {
		return
	}
	if c.MaxGap > rpo {
		p.Refusals = append(p.Refusals, fmt.Sprintf("service %q: the schedule (%s) leaves up to %s between markers, longer than rpo.journal = %s: the RPO would be breached by design; take markers more often or raise the RPO to at least %s",
			s.Name, scheduleString(c), model.FormatDuration(c.MaxGap), model.FormatDuration(rpo), model.FormatDuration(c.MaxGap)))
		return
	}
	if last, ok := in.lastApp(s.Name); ok {
		if age := in.now.Sub(last); age > rpo {
			p.Warnings = append(p.Warnings, fmt.Sprintf("service %q: the newest application-consistent marker is %s old, already older than rpo.journal = %s: an RPO alert opens unless the next marker succeeds", s.Name, age.Round(time.Second), model.FormatDuration(rpo)))
		}
	}
}

// expiring lists the markers the new retention lets go that the old one
// (none for a service new to the policy) keeps.
func expiring(in planInput, o, s *model.Service) []api.MarkerRef {
	var pts []retention.Point
	for _, m := range in.markers(s.Name) {
		pts = append(pts, retention.Point{ID: m.ID, TS: m.TS, App: m.Class == store.ClassApp})
	}
	if len(pts) == 0 {
		return nil
	}
	before := map[string]bool{}
	if o != nil {
		for _, x := range retention.Decide(in.now, retentionPolicy(o.Retention), pts).Expire {
			before[x.ID] = true
		}
	}
	var out []api.MarkerRef
	for _, x := range retention.Decide(in.now, retentionPolicy(s.Retention), pts).Expire {
		if before[x.ID] {
			continue
		}
		class := store.ClassCrash
		if x.App {
			class = store.ClassApp
		}
		out = append(out, api.MarkerRef{ID: x.ID, Time: time.Unix(0, x.TS).UTC(), Class: class})
	}
	return out
}

func retentionPolicy(r model.Retention) retention.Policy {
	return retention.Policy{Window: r.Journal, KeepHourly: r.KeepHourly, KeepDaily: r.KeepDaily,
		KeepWeekly: r.KeepWeekly, KeepMonthly: r.KeepMonthly, KeepYearly: r.KeepYearly}
}

func retentionString(r model.Retention) string {
	return fmt.Sprintf("journal %s, keep %d hourly %d daily %d weekly %d monthly %d yearly",
		model.FormatDuration(r.Journal), r.KeepHourly, r.KeepDaily, r.KeepWeekly, r.KeepMonthly, r.KeepYearly)
}

// serviceDiff lists what changes in a service's schedule, RPO, retention
// and apps. Secrets are compared by where they come from, never by value.
func serviceDiff(o, s *model.Service) []string {
	var ch []string
	add := func(what, a, b string) {
		if a != b {
			ch = append(ch, fmt.Sprintf("%s: %s -> %s", what, a, b))
		}
	}
	add("schedule", scheduleString(o.Consistency), scheduleString(s.Consistency))
	add("quiesce_timeout", model.FormatDuration(o.Consistency.QuiesceTimeout), model.FormatDuration(s.Consistency.QuiesceTimeout))
	add("on_quiesce_failure", string(o.Consistency.OnQuiesceFailure), string(s.Consistency.OnQuiesceFailure))
	add("rpo.journal", model.FormatDuration(o.RPO.Journal), model.FormatDuration(s.RPO.Journal))
	or, nr := o.Retention, s.Retention
	add("retention.journal", model.FormatDuration(or.Journal), model.FormatDuration(nr.Journal))
	for _, k := range []struct {
		name string
		a, b int
	}{{"keep_hourly", or.KeepHourly, nr.KeepHourly}, {"keep_daily", or.KeepDaily, nr.KeepDaily}, {"keep_weekly", or.KeepWeekly, nr.KeepWeekly},
		{"keep_monthly", or.KeepMonthly, nr.KeepMonthly}, {"keep_yearly", or.KeepYearly, nr.KeepYearly}} {
		add("retention."+k.name, fmt.Sprint(k.a), fmt.Sprint(k.b))
	}
	oa := map[string]*model.App{}
	for _, a := range o.Apps {
		oa[a.Name] = a
	}
	for _, a := range s.Apps {
		prev := oa[a.Name]
		delete(oa, a.Name)
		switch {
		case prev == nil:
			ch = append(ch, fmt.Sprintf("app %q (%s): added", a.Name, a.Plugin))
		case appJSON(prev) != appJSON(a):
			ch = append(ch, fmt.Sprintf("app %q (%s): settings change", a.Name, a.Plugin))
		}
	}
	var removed []string
	for name := range oa {
		removed = append(removed, name)
	}
	sort.Strings(removed)
	for _, name := range removed {
		ch = append(ch, fmt.Sprintf("app %q: removed", name))
	}
	return ch
}

func appJSON(a *model.App) string {
	b, _ := json.Marshal(a)
	cfg := map[string]string{}
	for k, v := range a.Config {
		if sec, ok := v.(model.Secret); ok {
			cfg[k] = sec.Source()
		}
	}
	c, _ := json.Marshal(cfg)
	return string(b) + string(c)
}

// targetConfig is the iSCSI target a policy volume asks for.
func targetConfig(s *model.Service, v *model.Volume) iscsi.TargetConfig {
	tc := iscsi.TargetConfig{IQN: v.TargetName, Alias: VolumeName(s.Name, v.Name), AllowedInitiators: v.Initiators}
	if tc.IQN == "" {
		tc.IQN = DefaultIQN(tc.Alias)
	}
	if v.CHAP != nil {
		tc.CHAP = &iscsi.CHAPConfig{Username: v.CHAP.Username, Secret: v.CHAP.Secret.Reveal(),
			MutualUsername: v.CHAP.MutualUsername, MutualSecret: v.CHAP.MutualSecret.Reveal()}
	}
	return tc
}

// targetDiff says how the live target differs from the wanted one, without
// revealing secrets; empty when they are the same.
func targetDiff(live, want iscsi.TargetConfig) string {
	if live.IQN == "" {
		return "target " + want.IQN + ": new"
	}
	var d []string
	if live.IQN != want.IQN {
		d = append(d, fmt.Sprintf("target name %s -> %s", live.IQN, want.IQN))
	}
	if !slices.Equal(live.AllowedInitiators, want.AllowedInitiators) {
		d = append(d, "allowed initiators change")
	}
	switch {
	case (live.CHAP == nil) != (want.CHAP == nil):
		if want.CHAP == nil {
			d = append(d, "CHAP off")
		} else {
			d = append(d, "CHAP on")
		}
	case live.CHAP != nil && *live.CHAP != *want.CHAP:
		d = append(d, "CHAP credentials change")
	}
	if len(d) == 0 {
		return ""
	}
	s := d[0]
	for _, x := range d[1:] {
		s += ", " + x
	}
	return s + " (open sessions are closed)"
}

func splitVolume(name string) (service, volume string) {
	for i := 0; i < len(name); i++ {
		if name[i] == '/' {
			return name[:i], name[i+1:]
		}
	}
	return "", name
}

func exposedClone(exps []api.Exposure, clone string) bool {
	for _, e := range exps {
		if e.Clone == clone {
			return true
		}
	}
	return false
}

func sizeString(n int64) string {
	switch {
	case n >= 1<<40 && n%(1<<40) == 0:
		return fmt.Sprintf("%dTiB", n>>40)
	case n >= 1<<30 && n%(1<<30) == 0:
		return fmt.Sprintf("%dGiB", n>>30)
	case n >= 1<<20 && n%(1<<20) == 0:
		return fmt.Sprintf("%dMiB", n>>20)
	case n >= 1<<10 && n%(1<<10) == 0:
		return fmt.Sprintf("%dKiB", n>>10)
	}
	return fmt.Sprintf("%dB", n)
}

func scheduleString(c model.Consistency) string {
	if c.Every > 0 {
		return "every " + model.FormatDuration(c.Every)
	}
	return c.Schedule
}

func short(h string) string {
	if len(h) > 12 {
		return h[:12]
	}
	return h
}
