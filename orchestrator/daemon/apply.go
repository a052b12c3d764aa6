package daemon

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/lockstep-io/lockstep/engine/iscsi"
	"github.com/lockstep-io/lockstep/engine/store"
	"github.com/lockstep-io/lockstep/orchestrator/api"
	"github.com/lockstep-io/lockstep/orchestrator/catalog"
	"github.com/lockstep-io/lockstep/policies/model"
)

// Errors of an apply that changed nothing.
var (
	errInvalid = errors.New("the policy is invalid")
	errRefused = errors.New("apply refused")
)

// Plan says what applying srcs would change; it changes nothing.
func (d *Daemon) Plan(ctx context.Context, srcs []api.Source, allowDestroy bool) (*api.Plan, error) {
	res, err := d.apply(ctx, srcs, allowDestroy, true)
	if err != nil {
		return nil, err
	}
	return &res.Plan, nil
}

// Apply applies srcs atomically: it computes the plan, refuses it if the
// plan has refusals, then creates volumes, changes targets, hands the
// policy to the orchestrator and records it. A failure at any step undoes
// the steps before it, so a failed apply changes nothing. Destroying
// volumes cannot be undone, so it happens last, once the new policy is
// recorded; a volume that fails to go is reported and shows up again in
// the next plan.
func (d *Daemon) Apply(ctx context.Context, srcs []api.Source, allowDestroy bool) (*api.ApplyResult, error) {
	return d.apply(ctx, srcs, allowDestroy, false)
}

func (d *Daemon) apply(ctx context.Context, srcs []api.Source, allowDestroy, dryRun bool) (*api.ApplyResult, error) {
	d.applyMu.Lock()
	defer d.applyMu.Unlock()
	if len(srcs) == 0 {
		return nil, fmt.Errorf("%w: no policy files given", errInvalid)
	}
	pol, diags := parseSources(d.cfg.DataDir, srcs)
	if pol == nil {
		if dryRun {
			return &api.ApplyResult{Plan: api.Plan{Invalid: true, Diagnostics: diags}}, nil
		}
		return nil, fmt.Errorf("%w:\n%s", errInvalid, diags)
	}
	d.mu.Lock()
	old := d.applied
	targets := make(map[string]iscsi.TargetConfig, len(d.targets))
	for k, v := range d.targets {
		targets[k] = v
	}
	d.mu.Unlock()
	var oldPol *model.Policy
	if old != nil {
		oldPol = old.pol
	}
	plan := computePlan(planInput{
		old: oldPol, new: pol, volumes: d.st.Volumes(), targets: targets, exposures: d.Exposures(),
		markers: d.st.Markers, lastApp: func(svc string) (time.Time, bool) { return d.lastApp(ctx, svc) },
		now: d.clk.Now(), allowDestroy: allowDestroy,
	})
	plan.Diagnostics = diags
	plan.Hash = hashSources(srcs)
	res := &api.ApplyResult{Plan: *plan}
	if dryRun {
		return res, nil
	}
	if len(plan.Refusals) > 0 {
		return res, fmt.Errorf("%w, nothing changed:\n  %s", errRefused, strings.Join(plan.Refusals, "\n  "))
	}

	var undo []func()
	fail := func(err error) (*api.ApplyResult, error) {
		for i := len(undo) - 1; i >= 0; i-- {
			undo[i]()
		}
		d.log.Error("apply failed; every step undone", "err", err)
		return nil, fmt.Errorf("apply failed, nothing changed: %w", err)
	}
	step := func(name string) error {
		if err := ctx.Err(); err != nil {
			return err
		}
		if d.hook != nil {
			return d.hook(name)
		}
		return nil
	}
	uctx := context.WithoutCancel(ctx)

	var destroy []string
	for _, vc := range plan.Volumes {
		switch vc.Action {
		case api.Create:
			if err := step("create " + vc.Volume); err != nil {
				return fail(err)
			}
			_, v := splitVolume(vc.Volume)
			pv := pol.Service(vc.Service).Volume(v)
			if _, err := d.st.CreateVolume(ctx, store.VolumeSpec{Name: vc.Volume, Size: pv.Size, BlockSize: pv.BlockSize}); err != nil {
				return fail(fmt.Errorf("create volume %q: %w", vc.Volume, err))
			}
			name := vc.Volume
			undo = append(undo, func() {
				if err := d.st.DeleteVolume(uctx, name); err != nil {
					d.log.Error("apply undo: volume not deleted", "volume", name, "err", err)
				}
			})
			d.log.Info("volume created", "volume", name, "size", pv.Size, "block_size", pv.BlockSize)
		case api.Destroy:
			destroy = append(destroy, vc.Volume)
		}
	}
	// Targets: removed volumes' first, then every policy volume whose
	// target is missing or differs.
	for _, name := range destroy {
		if err := d.swapTarget(step, &undo, name, nil); err != nil {
			return fail(err)
		}
	}
	for _, s := range pol.Services {
		for _, v := range s.Volumes {
			name := VolumeName(s.Name, v.Name)
			want := targetConfig(s, v)
			if targetDiff(targets[name], want) == "" {
				continue
			}
			if err := d.swapTarget(step, &undo, name, &want); err != nil {
				return fail(err)
			}
		}
	}
	// The policy file is the commit record: written before the
	// orchestrator takes the policy (its last fallible step), restored
	// if that fails.
	ap := &appliedPolicy{Version: 1, Hash: plan.Hash, Time: d.clk.Now().UTC(), Sources: srcs, pol: pol}
	switch {
	case old != nil && old.Hash == ap.Hash:
		ap.Version, ap.Time = old.Version, old.Time
	case old != nil:
		ap.Version = old.Version + 1
	}
	if err := step("persist"); err != nil {
		return fail(err)
	}
	if err := saveApplied(d.cfg.DataDir, ap); err != nil {
		return fail(err)
	}
	undo = append(undo, func() {
		var err error
		if old != nil {
			err = saveApplied(d.cfg.DataDir, old)
		} else {
			err = removeApplied(d.cfg.DataDir)
		}
		if err != nil {
			d.log.Error("apply undo: applied policy file not restored", "err", err)
		}
	})
	if err := step("orchestrator"); err != nil {
		return fail(err)
	}
	if _, err := d.prot.Apply(ctx, pol); err != nil {
		return fail(fmt.Errorf("orchestrator: %w", err))
	}
	// Committed.
	d.mu.Lock()
	d.applied = ap
	d.mu.Unlock()
	for _, name := range destroy {
		if err := d.st.DeleteVolume(uctx, name); err != nil {
			msg := fmt.Sprintf("volume %q was not destroyed: %v; it is no longer served and the next plan lists it again", name, err)
			res.Plan.Warnings = append(res.Plan.Warnings, msg)
			d.log.Error("apply: volume not destroyed", "volume", name, "err", err)
			continue
		}
		d.mu.Lock()
		delete(d.io, name)
		d.mu.Unlock()
		d.log.Warn("volume destroyed", "volume", name)
	}
	res.Policy = *ap.info()
	d.log.Info("policy applied", "version", ap.Version, "hash", short(ap.Hash), "volume_changes", len(plan.Volumes), "service_changes", len(plan.Services))
	return res, nil
}

// swapTarget replaces the live target of volume by want (nil removes it),
// registering the undo.
func (d *Daemon) swapTarget(step func(string) error, undo *[]func(), volume string, want *iscsi.TargetConfig) error {
	if err := step("target " + volume); err != nil {
		return err
	}
	d.mu.Lock()
	prev, had := d.targets[volume]
	d.mu.Unlock()
	restore := func() {
		if !had {
			return
		}
		v, err := d.st.Volume(volume)
		if err == nil {
			err = d.addTarget(prev, v)
		}
		if err != nil {
			d.log.Error("apply undo: target not restored", "volume", volume, "iqn", prev.IQN, "err", err)
		}
	}
	if err := d.removeTarget(volume); err != nil {
		return err
	}
	if want == nil {
		*undo = append(*undo, restore)
		return nil
	}
	v, err := d.st.Volume(volume)
	if err == nil {
		err = d.addTarget(*want, v)
	}
	if err != nil {
		restore()
		return err
	}
	*undo = append(*undo, func() {
		if err := d.removeTarget(volume); err != nil {
			d.log.Error("apply undo: target not removed", "volume", volume, "err", err)
		}
		restore()
	})
	return nil
}

// activate brings up the applied policy at start: its volumes (created if
// the data directory lost them), their targets, the orchestrator.
func (d *Daemon) activate(ctx context.Context, ap *appliedPolicy) error {
	for _, s := range ap.pol.Services {
		for _, pv := range s.Volumes {
			name := VolumeName(s.Name, pv.Name)
			v, err := d.st.Volume(name)
			if errors.Is(err, store.ErrNotFound) {
				v, err = d.st.CreateVolume(ctx, store.VolumeSpec{Name: name, Size: pv.Size, BlockSize: pv.BlockSize})
				if err == nil {
					d.log.Warn("volume of the applied policy was missing; created empty", "volume", name)
				}
			}
			if err != nil {
				return fmt.Errorf("service %q volume %q: %w", s.Name, pv.Name, err)
			}
			if v.Size() != pv.Size || v.BlockSize() != pv.BlockSize {
				return fmt.Errorf("service %q volume %q: the applied policy says %d bytes in %d-byte blocks, the data directory has %d in %d", s.Name, pv.Name, pv.Size, pv.BlockSize, v.Size(), v.BlockSize())
			}
			if err := d.addTarget(targetConfig(s, pv), v); err != nil {
				return fmt.Errorf("service %q volume %q: %w", s.Name, pv.Name, err)
			}
		}
	}
	if _, err := d.prot.Apply(ctx, ap.pol); err != nil {
		return fmt.Errorf("orchestrator: %w", err)
	}
	d.mu.Lock()
	d.applied = ap
	d.mu.Unlock()
	d.log.Info("applied policy loaded", "version", ap.Version, "hash", short(ap.Hash), "services", len(ap.pol.Services))
	return nil
}

// lastApp is the time of the newest application-consistent marker of svc.
func (d *Daemon) lastApp(ctx context.Context, svc string) (time.Time, bool) {
	ms, err := d.prot.Markers(ctx, svc, time.Time{})
	if err != nil {
		return time.Time{}, false
	}
	for i := len(ms) - 1; i >= 0; i-- {
		if ms[i].Class == catalog.ClassApp && ms[i].Restorable() {
			return ms[i].Time, true
		}
	}
	return time.Time{}, false
}
