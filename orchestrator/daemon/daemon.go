// Package daemon is the minimal Lockstep daemon: it opens a data directory,
// creates the volumes a policy declares, serves each over iSCSI as a target of
// its own, and presents volumes at past points in time on request through a
// local control socket. The orchestrator issue grows it into the full daemon.
package daemon

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"regexp"
	"sort"
	"strings"
	"sync"
	"time"

	"github.com/lockstep-io/lockstep/engine/blockdev"
	"github.com/lockstep-io/lockstep/engine/iscsi"
	"github.com/lockstep-io/lockstep/engine/store"
	"github.com/lockstep-io/lockstep/policies/model"
)

// IQNPrefix names targets of volumes that no policy names.
const IQNPrefix = "iqn.2026-11.io.lockstep:"

// Config configures a Daemon.
type Config struct {
	DataDir string
	// Policy declares services and volumes; nil serves the volumes already
	// in the data directory.
	Policy *model.Policy
	// ISCSIAddr is the portal to listen on (default 127.0.0.1:3260).
	ISCSIAddr string
	// ControlSocket is the control API's unix socket (default
	// DataDir/control.sock, mode 0600).
	ControlSocket string
	Logger        *slog.Logger
	StoreOptions  store.Options
}

// Daemon runs the store, the iSCSI target and the control API.
type Daemon struct {
	cfg   Config
	log   *slog.Logger
	st    *store.Store
	srv   *iscsi.Server
	iscsi net.Listener

	mu      sync.Mutex
	targets map[string]string // volume name -> IQN of its live target
	exposed map[string]*Exposure
}

// Exposure is a volume presented at a past point as a LUN of its own target.
type Exposure struct {
	IQN      string    `json:"iqn"`
	LUN      uint64    `json:"lun"`
	Portal   string    `json:"portal"`
	Volume   string    `json:"volume"`
	At       time.Time `json:"at"`
	Marker   string    `json:"marker,omitempty"`
	Writable bool      `json:"writable"`
	Clone    string    `json:"clone,omitempty"` // writable: the clone volume
	view     *store.View
}

// New opens the data directory and prepares the targets; Serve starts them.
func New(ctx context.Context, cfg Config) (*Daemon, error) {
	if cfg.ISCSIAddr == "" {
		cfg.ISCSIAddr = "127.0.0.1:3260"
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	if cfg.ControlSocket == "" {
		cfg.ControlSocket = cfg.DataDir + "/control.sock"
	}
	cfg.StoreOptions.Logger = cfg.Logger
	st, err := store.Open(ctx, cfg.DataDir, cfg.StoreOptions)
	if err != nil {
		return nil, err
	}
	d := &Daemon{cfg: cfg, log: cfg.Logger, st: st, targets: map[string]string{}, exposed: map[string]*Exposure{}}
	d.iscsi, err = net.Listen("tcp", cfg.ISCSIAddr)
	if err != nil {
		st.Close()
		return nil, fmt.Errorf("iscsi portal %s: %w", cfg.ISCSIAddr, err)
	}
	d.srv = iscsi.NewServer(iscsi.ServerConfig{Portal: d.iscsi.Addr().String(), Logger: cfg.Logger})
	if err := d.addTargets(ctx); err != nil {
		d.Close()
		return nil, err
	}
	return d, nil
}

// VolumeName is the store name of a service's volume.
func VolumeName(service, volume string) string { return service + "/" + volume }

func (d *Daemon) addTargets(ctx context.Context) error {
	if d.cfg.Policy == nil {
		for _, vi := range d.st.Volumes() {
			if vi.Parent != "" {
				continue
			}
			v, err := d.st.Volume(vi.Name)
			if err != nil {
				return err
			}
			if err := d.addTarget(vi.Name, iscsi.TargetConfig{IQN: DefaultIQN(vi.Name), Alias: vi.Name}, v); err != nil {
				return err
			}
		}
		return nil
	}
	for _, svc := range d.cfg.Policy.Services {
		for _, pv := range svc.Volumes {
			name := VolumeName(svc.Name, pv.Name)
			v, err := d.st.Volume(name)
			if errors.Is(err, store.ErrNotFound) {
				v, err = d.st.CreateVolume(ctx, store.VolumeSpec{Name: name, Size: pv.Size, BlockSize: pv.BlockSize})
				if err == nil {
					d.log.Info("volume created", "volume", name, "size", pv.Size, "block_size", pv.BlockSize)
				}
			}
			if err != nil {
				return fmt.Errorf("service %q volume %q: %w", svc.Name, pv.Name, err)
			}
			if v.Size() != pv.Size || v.BlockSize() != pv.BlockSize {
				return fmt.Errorf("service %q volume %q: the policy says %d bytes in %d-byte blocks, the data directory has %d in %d; resizing is not supported yet", svc.Name, pv.Name, pv.Size, pv.BlockSize, v.Size(), v.BlockSize())
			}
			tc := iscsi.TargetConfig{IQN: pv.TargetName, Alias: name, AllowedInitiators: pv.Initiators}
			if pv.CHAP != nil {
				tc.CHAP = &iscsi.CHAPConfig{Username: pv.CHAP.Username, Secret: pv.CHAP.Secret.Reveal(),
					MutualUsername: pv.CHAP.MutualUsername, MutualSecret: pv.CHAP.MutualSecret.Reveal()}
			}
			if err := d.addTarget(name, tc, v); err != nil {
				return fmt.Errorf("service %q volume %q: %w", svc.Name, pv.Name, err)
			}
		}
	}
	return nil
}

func (d *Daemon) addTarget(volume string, tc iscsi.TargetConfig, dev blockdev.Device) error {
	tc.LUNs = []iscsi.LUNConfig{{ID: 0, Device: dev}}
	if err := d.srv.AddTarget(tc); err != nil {
		return err
	}
	d.mu.Lock()
	d.targets[volume] = tc.IQN
	d.mu.Unlock()
	d.log.Info("iscsi target", "iqn", tc.IQN, "portal", d.iscsi.Addr().String(), "chap", tc.CHAP != nil, "initiators", len(tc.AllowedInitiators))
	return nil
}

var iqnUnsafe = regexp.MustCompile(`[^a-z0-9.-]+`)

// DefaultIQN derives a target name from a volume name.
func DefaultIQN(volume string) string {
	return IQNPrefix + iqnUnsafe.ReplaceAllString(strings.ToLower(strings.ReplaceAll(volume, "/", ".")), "-")
}

// Store is the daemon's data directory.
func (d *Daemon) Store() *store.Store { return d.st }

// Portal is the iSCSI portal address.
func (d *Daemon) Portal() string { return d.iscsi.Addr().String() }

// Serve runs the iSCSI portal and the control API until ctx ends.
func (d *Daemon) Serve(ctx context.Context) error {
	ctl, err := listenControl(d.cfg.ControlSocket)
	if err != nil {
		return err
	}
	errc := make(chan error, 2)
	go func() { errc <- d.srv.Serve(ctx, d.iscsi) }()
	go func() { errc <- d.serveControl(ctx, ctl) }()
	d.log.Info("lockstep serving", "data", d.cfg.DataDir, "iscsi", d.Portal(), "control", d.cfg.ControlSocket)
	select {
	case <-ctx.Done():
		return nil
	case err := <-errc:
		return err
	}
}

// ParsePoint resolves --at: RFC 3339, a relative "-15m", or Unix nanoseconds.
func ParsePoint(now time.Time, s string) (time.Time, error) {
	if strings.HasPrefix(s, "-") {
		dur, err := time.ParseDuration(s[1:])
		if err != nil {
			return time.Time{}, fmt.Errorf("time %q: %w", s, err)
		}
		return now.Add(-dur), nil
	}
	if t, err := time.Parse(time.RFC3339Nano, s); err == nil {
		return t, nil
	}
	var ns int64
	if _, err := fmt.Sscanf(s, "%d", &ns); err == nil && fmt.Sprint(ns) == s {
		return time.Unix(0, ns), nil
	}
	return time.Time{}, fmt.Errorf("time %q: want RFC 3339 (2026-11-23T14:00:00Z), a relative time (-15m) or Unix nanoseconds", s)
}

// ExposeRequest asks for a volume at a point in time.
type ExposeRequest struct {
	Volume   string `json:"volume"`
	At       string `json:"at,omitempty"`     // see ParsePoint
	Marker   string `json:"marker,omitempty"` // a marker id instead of At
	Writable bool   `json:"writable,omitempty"`
}

// Expose presents a volume as it was at a point in time as a new target:
// read-only, or a copy-on-write clone whose writes never touch the
// original's journal.
func (d *Daemon) Expose(ctx context.Context, req ExposeRequest) (*Exposure, error) {
	v, err := d.st.Volume(req.Volume)
	if err != nil {
		return nil, err
	}
	var at time.Time
	switch {
	case req.Marker != "" && req.At != "":
		return nil, errors.New("expose: give a time or a marker, not both")
	case req.Marker != "":
		m, ok := d.st.Marker(req.Marker)
		if !ok {
			return nil, fmt.Errorf("expose: no marker %q", req.Marker)
		}
		if !contains(m.Volumes, req.Volume) {
			return nil, fmt.Errorf("expose: marker %q does not cover volume %q (it covers %s)", req.Marker, req.Volume, strings.Join(m.Volumes, ", "))
		}
		at = time.Unix(0, m.TS)
	case req.At != "":
		if at, err = ParsePoint(time.Now(), req.At); err != nil {
			return nil, err
		}
	default:
		return nil, errors.New("expose: give --at TIME or --marker ID")
	}
	ts := at.UnixNano()
	e := &Exposure{Volume: req.Volume, At: at.UTC(), Marker: req.Marker, Writable: req.Writable, Portal: d.Portal()}
	d.mu.Lock()
	base := d.targets[req.Volume]
	d.mu.Unlock()
	if base == "" {
		base = DefaultIQN(req.Volume)
	}
	kind := "pit"
	if req.Writable {
		kind = "clone"
	}
	e.IQN = fmt.Sprintf("%s.%s-%x", base, kind, ts)
	var dev blockdev.Device
	if req.Writable {
		e.Clone = fmt.Sprintf("%s.clone-%x", req.Volume, ts)
		cv, err := d.st.Clone(ctx, req.Volume, ts, e.Clone)
		if err != nil {
			return nil, fmt.Errorf("expose %q writable: %w", req.Volume, err)
		}
		dev = cv
	} else {
		view, err := v.View(ctx, ts)
		if err != nil {
			return nil, fmt.Errorf("expose %q: %w", req.Volume, err)
		}
		e.view, dev = view, view
	}
	if err := d.srv.AddTarget(iscsi.TargetConfig{IQN: e.IQN, Alias: req.Volume + "@" + e.At.Format(time.RFC3339Nano), LUNs: []iscsi.LUNConfig{{ID: 0, Device: dev}}}); err != nil {
		d.release(ctx, e)
		return nil, fmt.Errorf("expose %q: %w", req.Volume, err)
	}
	d.mu.Lock()
	d.exposed[e.IQN] = e
	d.mu.Unlock()
	d.log.Info("volume exposed", "volume", req.Volume, "at", e.At, "iqn", e.IQN, "writable", req.Writable)
	return e, nil
}

func contains(list []string, s string) bool {
	for _, x := range list {
		if x == s {
			return true
		}
	}
	return false
}

// Unexpose removes an exposure's target, closing its sessions; a writable
// exposure's clone is deleted unless keep is set.
func (d *Daemon) Unexpose(ctx context.Context, iqn string, keep bool) error {
	d.mu.Lock()
	e := d.exposed[iqn]
	delete(d.exposed, iqn)
	d.mu.Unlock()
	if e == nil {
		return fmt.Errorf("unexpose: no exposure %q", iqn)
	}
	if err := d.srv.RemoveTarget(iqn); err != nil {
		return fmt.Errorf("unexpose %q: %w", iqn, err)
	}
	if keep {
		e.Clone = ""
	}
	return d.release(ctx, e)
}

func (d *Daemon) release(ctx context.Context, e *Exposure) error {
	if e.view != nil {
		e.view.Close()
	}
	if e.Clone != "" {
		return d.st.DeleteVolume(ctx, e.Clone)
	}
	return nil
}

// Exposures lists the live exposures.
func (d *Daemon) Exposures() []*Exposure {
	d.mu.Lock()
	defer d.mu.Unlock()
	out := make([]*Exposure, 0, len(d.exposed))
	for _, e := range d.exposed {
		out = append(out, e)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].IQN < out[j].IQN })
	return out
}

// VolumeStatus is one served volume.
type VolumeStatus struct {
	store.VolumeInfo
	IQN string `json:"iqn,omitempty"`
}

// Volumes lists the volumes and their targets.
func (d *Daemon) Volumes() []VolumeStatus {
	d.mu.Lock()
	defer d.mu.Unlock()
	var out []VolumeStatus
	for _, vi := range d.st.Volumes() {
		out = append(out, VolumeStatus{VolumeInfo: vi, IQN: d.targets[vi.Name]})
	}
	return out
}

// Close stops serving and closes the data directory.
func (d *Daemon) Close() error {
	if d.srv != nil {
		d.srv.Close()
	}
	if d.iscsi != nil {
		d.iscsi.Close()
	}
	for _, e := range d.Exposures() {
		if e.view != nil {
			e.view.Close()
		}
	}
	return d.st.Close()
}
