package daemon

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"time"

	"github.com/lockstep-io/lockstep/engine/blockdev"
	"github.com/lockstep-io/lockstep/engine/iscsi"
	"github.com/lockstep-io/lockstep/orchestrator/api"
)

// ExposuresFile records the live exposures (volume expose, restore
// --as-new), so that a restart serves them again under the same names: an
// operator testing a restore, or a host recovering files from a clone, must
// not lose its LUN (or be left with a clone no target serves) because the
// daemon was restarted.
const ExposuresFile = "exposures.json"

// exposureTarget is the target of e on dev. The data is the source
// volume's, so is who may log in to it: its initiator list and CHAP.
func (d *Daemon) exposureTarget(e *exposure, dev blockdev.Device) iscsi.TargetConfig {
	d.mu.Lock()
	src := d.targets[e.Volume]
	d.mu.Unlock()
	alias := e.Clone
	if alias == "" {
		alias = e.Volume + "@" + e.At.Format(time.RFC3339Nano)
	}
	return iscsi.TargetConfig{IQN: e.IQN, Alias: alias, LUNs: []iscsi.LUNConfig{{ID: 0, Device: dev}},
		AllowedInitiators: src.AllowedInitiators, CHAP: src.CHAP}
}

// saveExposures writes ExposuresFile from the live exposures. A failure is
// logged: the exposures work, but would not come back after a restart.
func (d *Daemon) saveExposures() {
	list := d.Exposures()
	b, err := json.MarshalIndent(list, "", "  ")
	if err == nil {
		err = api.WriteFileAtomic(filepath.Join(d.cfg.DataDir, ExposuresFile), append(b, '\n'), 0o600)
	}
	if err != nil {
		d.log.Error("exposures not recorded: they will not be served again after a restart", "err", err)
	}
}

// restoreExposures serves again the exposures recorded before a restart,
// and gives every clone volume no record names a target of its own (a
// crash between making the clone and recording it), so that no clone is
// left unreachable and unremovable.
func (d *Daemon) restoreExposures(ctx context.Context) error {
	var recs []api.Exposure
	b, err := os.ReadFile(filepath.Join(d.cfg.DataDir, ExposuresFile))
	switch {
	case errors.Is(err, os.ErrNotExist):
	case err != nil:
		return fmt.Errorf("exposures: %w", err)
	default:
		if err := json.Unmarshal(b, &recs); err != nil {
			return fmt.Errorf("exposures: %s: %w", ExposuresFile, err)
		}
	}
	served := map[string]bool{}
	for _, r := range recs {
		e := &exposure{Exposure: r}
		e.Portal = d.Portal()
		if err := d.reexpose(ctx, e); err != nil {
			d.log.Warn("exposure not served again", "iqn", r.IQN, "volume", r.Volume, "at", r.At, "err", err)
			continue
		}
		if e.Clone != "" {
			served[e.Clone] = true
		}
	}
	for _, vi := range d.st.Volumes() {
		if vi.Parent == "" || served[vi.Name] {
			continue
		}
		e := &exposure{Exposure: api.Exposure{IQN: DefaultIQN(vi.Name), Portal: d.Portal(), Volume: vi.Parent,
			At: time.Unix(0, vi.ParentAt).UTC(), Writable: true, Clone: vi.Name}}
		if err := d.reexpose(ctx, e); err != nil {
			d.log.Warn("clone without a target", "volume", vi.Name, "err", err)
			continue
		}
		d.log.Warn("clone volume had no exposure record; serving it", "volume", vi.Name, "iqn", e.IQN,
			"remove", "lockstep volume unexpose "+e.IQN)
	}
	if len(recs) > 0 || len(d.exposed) > 0 {
		d.saveExposures()
	}
	return nil
}

// reexpose serves a recorded exposure: a clone's volume, or a new view at
// the recorded point.
func (d *Daemon) reexpose(ctx context.Context, e *exposure) error {
	var dev blockdev.Device
	if e.Writable {
		v, err := d.st.Volume(e.Clone)
		if err != nil {
			return err
		}
		dev = v
	} else {
		v, err := d.st.Volume(e.Volume)
		if err != nil {
			return err
		}
		view, err := v.View(ctx, e.At.UnixNano())
		if err != nil {
			return err
		}
		e.view, dev = view, view
	}
	if err := d.srv.AddTarget(d.exposureTarget(e, dev)); err != nil {
		d.release(ctx, &exposure{view: e.view}) // never the clone
		return err
	}
	d.mu.Lock()
	d.exposed[e.IQN] = e
	d.mu.Unlock()
	d.log.Info("volume exposed again", "volume", e.Volume, "at", e.At, "iqn", e.IQN, "writable", e.Writable)
	return nil
}

// sortExposures orders exposures by IQN.
func sortExposures(list []api.Exposure) {
	sort.Slice(list, func(i, j int) bool { return list[i].IQN < list[j].IQN })
}
