// Package boltcat is the embedded catalog: one bbolt file (a copy-on-write
// B+tree, every transaction fsynced) in the daemon's data directory. See
// docs/adr/0005-catalog.md for why bbolt.
//
// # Layout
//
//	meta       "seq.policy", "seq.event", "seq.alert": next ids; "heartbeat": unix ns
//	policies   BE64 version              -> AppliedPolicy JSON
//	volumes    service 0x00 name          -> Volume JSON
//	markers    id                         -> Marker JSON
//	mtime      service 0x00 BE64 ts BE64 seq id -> "" (time index of markers)
//	events     BE64 seq                   -> Event JSON
//	alerts     BE64 seq                   -> Alert JSON
//	downtimes  BE64 start                 -> Downtime JSON
//
// # Event bound
//
// The events bucket keeps at most Options.MaxEvents events, and none older
// than Options.MaxEventAge before the newest event's time: AddEvent trims
// the oldest in the same transaction. Markers, alerts and downtimes are kept
// for the reports (their growth is one record per marker or breach).
package boltcat

import (
	"bytes"
	"context"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"sync/atomic"
	"time"

	bolt "go.etcd.io/bbolt"

	"github.com/lockstep-io/lockstep/orchestrator/catalog"
)

// Defaults of Options.
const (
	DefaultMaxEvents   = 100_000
	DefaultMaxEventAge = 90 * 24 * time.Hour
)

// Options configure a Catalog.
type Options struct {
	// MaxEvents and MaxEventAge bound the event history (defaults above).
	MaxEvents   int
	MaxEventAge time.Duration
	// LockTimeout is how long Open waits for another process holding the
	// file (default 1 s), after which it fails rather than hangs.
	LockTimeout time.Duration
}

var (
	bMeta      = []byte("meta")
	bPolicies  = []byte("policies")
	bVolumes   = []byte("volumes")
	bMarkers   = []byte("markers")
	bMtime     = []byte("mtime")
	bEvents    = []byte("events")
	bAlerts    = []byte("alerts")
	bDowntimes = []byte("downtimes")
	allBuckets = [][]byte{bMeta, bPolicies, bVolumes, bMarkers, bMtime, bEvents, bAlerts, bDowntimes}
)

// Catalog is a catalog.Catalog in a bbolt file.
type Catalog struct {
	db     *bolt.DB
	opts   Options
	closed atomic.Bool
}

var _ catalog.Catalog = (*Catalog)(nil)

// Open opens or creates the catalog file path (mode 0600).
func Open(path string, opts Options) (*Catalog, error) {
	if opts.MaxEvents <= 0 {
		opts.MaxEvents = DefaultMaxEvents
	}
	if opts.MaxEventAge <= 0 {
		opts.MaxEventAge = DefaultMaxEventAge
	}
	if opts.LockTimeout <= 0 {
		opts.LockTimeout = time.Second
	}
	if err := os.MkdirAll(filepath.Dir(path), 0o750); err != nil {
		return nil, fmt.Errorf("catalog %q: %w", path, err)
	}
	db, err := bolt.Open(path, 0o600, &bolt.Options{Timeout: opts.LockTimeout})
	if err != nil {
		return nil, fmt.Errorf("catalog %q: %w", path, err)
	}
	err = db.Update(func(tx *bolt.Tx) error {
		for _, b := range allBuckets {
			if _, err := tx.CreateBucketIfNotExists(b); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		db.Close()
		return nil, fmt.Errorf("catalog %q: %w", path, err)
	}
	return &Catalog{db: db, opts: opts}, nil
}

// Close implements catalog.Catalog.
func (c *Catalog) Close() error {
	if c.closed.Swap(true) {
		return nil
	}
	return c.db.Close()
}

func (c *Catalog) view(ctx context.Context, f func(tx *bolt.Tx) error) error {
	if c.closed.Load() {
		return catalog.ErrClosed
	}
	if err := ctx.Err(); err != nil {
		return err
	}
	return c.db.View(f)
}

func (c *Catalog) update(ctx context.Context, f func(tx *bolt.Tx) error) error {
	if c.closed.Load() {
		return catalog.ErrClosed
	}
	if err := ctx.Err(); err != nil {
		return err
	}
	err := c.db.Update(f)
	if errors.Is(err, bolt.ErrDatabaseNotOpen) {
		return catalog.ErrClosed
	}
	return err
}

func be64(n uint64) []byte {
	var b [8]byte
	binary.BigEndian.PutUint64(b[:], n)
	return b[:]
}

// nextSeq increments and returns the counter name of meta.
func nextSeq(tx *bolt.Tx, name string) uint64 {
	m := tx.Bucket(bMeta)
	var n uint64
	if v := m.Get([]byte(name)); len(v) == 8 {
		n = binary.BigEndian.Uint64(v)
	}
	n++
	m.Put([]byte(name), be64(n))
	return n
}

func put(b *bolt.Bucket, key []byte, v any) error {
	data, err := json.Marshal(v)
	if err != nil {
		return err
	}
	return b.Put(key, data)
}

// PutPolicy implements catalog.Catalog.
func (c *Catalog) PutPolicy(ctx context.Context, p catalog.AppliedPolicy, vols []catalog.Volume) (catalog.AppliedPolicy, error) {
	err := c.update(ctx, func(tx *bolt.Tx) error {
		p.Version = int(nextSeq(tx, "seq.policy"))
		if err := put(tx.Bucket(bPolicies), be64(uint64(p.Version)), p); err != nil {
			return err
		}
		vb := tx.Bucket(bVolumes)
		old := map[string]catalog.Volume{}
		cur := vb.Cursor()
		for k, v := cur.First(); k != nil; k, v = cur.Next() {
			var ov catalog.Volume
			if json.Unmarshal(v, &ov) == nil {
				old[string(k)] = ov
			}
		}
		for k := range old {
			if err := vb.Delete([]byte(k)); err != nil {
				return err
			}
		}
		for _, v := range vols {
			key := v.Service + "\x00" + v.Name
			if ov, ok := old[key]; ok && !ov.Created.IsZero() {
				v.Created = ov.Created
			} else if v.Created.IsZero() {
				v.Created = p.Time
			}
			if err := put(vb, []byte(key), v); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		return catalog.AppliedPolicy{}, fmt.Errorf("catalog: put policy: %w", err)
	}
	return p, nil
}

// Policy implements catalog.Catalog.
func (c *Catalog) Policy(ctx context.Context) (catalog.AppliedPolicy, error) {
	var p catalog.AppliedPolicy
	err := c.view(ctx, func(tx *bolt.Tx) error {
		_, v := tx.Bucket(bPolicies).Cursor().Last()
		if v == nil {
			return catalog.ErrNotFound
		}
		return json.Unmarshal(v, &p)
	})
	if err != nil {
		return p, fmt.Errorf("catalog: policy: %w", err)
	}
	return p, nil
}

// Policies implements catalog.Catalog.
func (c *Catalog) Policies(ctx context.Context) ([]catalog.AppliedPolicy, error) {
	var out []catalog.AppliedPolicy
	err := c.view(ctx, func(tx *bolt.Tx) error {
		return tx.Bucket(bPolicies).ForEach(func(_, v []byte) error {
			var p catalog.AppliedPolicy
			if err := json.Unmarshal(v, &p); err != nil {
				return err
			}
			out = append(out, p)
			return nil
		})
	})
	if err != nil {
		return nil, fmt.Errorf("catalog: policies: %w", err)
	}
	return out, nil
}

// Volumes implements catalog.Catalog.
func (c *Catalog) Volumes(ctx context.Context, service string) ([]catalog.Volume, error) {
	var out []catalog.Volume
	err := c.view(ctx, func(tx *bolt.Tx) error {
		cur := tx.Bucket(bVolumes).Cursor()
		prefix := []byte(nil)
		if service != "" {
			prefix = []byte(service + "\x00")
		}
		for k, v := cur.Seek(prefix); k != nil && bytes.HasPrefix(k, prefix); k, v = cur.Next() {
			var vol catalog.Volume
			if err := json.Unmarshal(v, &vol); err != nil {
				return err
			}
			out = append(out, vol)
		}
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("catalog: volumes: %w", err)
	}
	return out, nil
}

// mtimeKey orders a service's markers by time then sequence. Times before
// 1970 do not occur (journal timestamps are Unix ns).
func mtimeKey(m *catalog.Marker) []byte {
	k := make([]byte, 0, len(m.Service)+17+len(m.ID))
	k = append(k, m.Service...)
	k = append(k, 0)
	k = append(k, be64(uint64(max(m.Time.UnixNano(), 0)))...)
	k = append(k, be64(m.Seq)...)
	return append(k, m.ID...)
}

func mtimeSeek(service string, t time.Time) []byte {
	k := append([]byte(service), 0)
	if t.IsZero() {
		return k
	}
	return append(k, be64(uint64(max(t.UnixNano(), 0)))...)
}

// PutMarker implements catalog.Catalog.
func (c *Catalog) PutMarker(ctx context.Context, m catalog.Marker) error {
	if m.ID == "" || m.Service == "" {
		return fmt.Errorf("catalog: put marker: id and service are required")
	}
	err := c.update(ctx, func(tx *bolt.Tx) error {
		mb, ib := tx.Bucket(bMarkers), tx.Bucket(bMtime)
		if v := mb.Get([]byte(m.ID)); v != nil {
			var old catalog.Marker
			if err := json.Unmarshal(v, &old); err != nil {
				return err
			}
			if err := ib.Delete(mtimeKey(&old)); err != nil {
				return err
			}
		}
		if err := put(mb, []byte(m.ID), m); err != nil {
			return err
		}
		return ib.Put(mtimeKey(&m), nil)
	})
	if err != nil {
		return fmt.Errorf("catalog: put marker %s: %w", m.ID, err)
	}
	return nil
}

// Marker implements catalog.Catalog.
func (c *Catalog) Marker(ctx context.Context, id string) (catalog.Marker, error) {
	var m catalog.Marker
	err := c.view(ctx, func(tx *bolt.Tx) error {
		v := tx.Bucket(bMarkers).Get([]byte(id))
		if v == nil {
			return catalog.ErrNotFound
		}
		return json.Unmarshal(v, &m)
	})
	if err != nil {
		return m, fmt.Errorf("catalog: marker %s: %w", id, err)
	}
	return m, nil
}

// services lists the services present in the time index.
func services(ib *bolt.Bucket) []string {
	var out []string
	cur := ib.Cursor()
	for k, _ := cur.First(); k != nil; {
		i := bytes.IndexByte(k, 0)
		if i < 0 {
			break
		}
		svc := string(k[:i])
		out = append(out, svc)
		k, _ = cur.Seek(append([]byte(svc), 1))
	}
	return out
}

// Markers implements catalog.Catalog.
func (c *Catalog) Markers(ctx context.Context, f catalog.MarkerFilter) ([]catalog.Marker, error) {
	var out []catalog.Marker
	err := c.view(ctx, func(tx *bolt.Tx) error {
		mb, ib := tx.Bucket(bMarkers), tx.Bucket(bMtime)
		svcs := []string{f.Service}
		if f.Service == "" {
			svcs = services(ib)
		}
		for _, svc := range svcs {
			var got []catalog.Marker
			prefix := append([]byte(svc), 0)
			cur := ib.Cursor()
			if f.Limit > 0 {
				// Newest first, stopping at Limit.
				var k []byte
				if !f.Until.IsZero() {
					k, _ = cur.Seek(mtimeSeek(svc, f.Until))
					if k == nil {
						k, _ = cur.Last()
					} else {
						k, _ = cur.Prev()
					}
				} else {
					k, _ = cur.Seek(append([]byte(svc), 1))
					if k == nil {
						k, _ = cur.Last()
					} else {
						k, _ = cur.Prev()
					}
				}
				for ; k != nil && bytes.HasPrefix(k, prefix) && len(got) < f.Limit; k, _ = cur.Prev() {
					m, ok, err := load(mb, k[len(prefix)+16:], f)
					if err != nil {
						return err
					}
					if m.Time.Before(f.Since) {
						break
					}
					if ok {
						got = append(got, m)
					}
				}
				for i, j := 0, len(got)-1; i < j; i, j = i+1, j-1 {
					got[i], got[j] = got[j], got[i]
				}
			} else {
				for k, _ := cur.Seek(mtimeSeek(svc, f.Since)); k != nil && bytes.HasPrefix(k, prefix); k, _ = cur.Next() {
					m, ok, err := load(mb, k[len(prefix)+16:], f)
					if err != nil {
						return err
					}
					if !f.Until.IsZero() && !m.Time.Before(f.Until) {
						break
					}
					if ok {
						got = append(got, m)
					}
				}
			}
			out = append(out, got...)
		}
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("catalog: markers: %w", err)
	}
	if f.Service == "" {
		sort.SliceStable(out, func(i, j int) bool {
			if !out[i].Time.Equal(out[j].Time) {
				return out[i].Time.Before(out[j].Time)
			}
			return out[i].Seq < out[j].Seq
		})
		if f.Limit > 0 && len(out) > f.Limit {
			out = out[len(out)-f.Limit:]
		}
	}
	return out, nil
}

// load reads marker id and says whether it passes f's class and time range.
func load(mb *bolt.Bucket, id []byte, f catalog.MarkerFilter) (catalog.Marker, bool, error) {
	var m catalog.Marker
	v := mb.Get(id)
	if v == nil {
		return m, false, fmt.Errorf("time index names missing marker %q", id)
	}
	if err := json.Unmarshal(v, &m); err != nil {
		return m, false, err
	}
	ok := (f.Class == "" || m.Class == f.Class) && !m.Time.Before(f.Since) && (f.Until.IsZero() || m.Time.Before(f.Until))
	return m, ok, nil
}

// LatestMarker implements catalog.Catalog.
func (c *Catalog) LatestMarker(ctx context.Context, service string, classes ...string) (catalog.Marker, error) {
	want := map[string]bool{}
	skipped := false
	for _, cl := range classes {
		want[cl] = true
		skipped = skipped || cl == catalog.ClassSkipped
	}
	var m catalog.Marker
	err := c.view(ctx, func(tx *bolt.Tx) error {
		mb, ib := tx.Bucket(bMarkers), tx.Bucket(bMtime)
		prefix := append([]byte(service), 0)
		cur := ib.Cursor()
		k, _ := cur.Seek(append([]byte(service), 1))
		if k == nil {
			k, _ = cur.Last()
		} else {
			k, _ = cur.Prev()
		}
		for ; k != nil && bytes.HasPrefix(k, prefix); k, _ = cur.Prev() {
			got, _, err := load(mb, k[len(prefix)+16:], catalog.MarkerFilter{})
			if err != nil {
				return err
			}
			if len(want) > 0 && !want[got.Class] {
				continue
			}
			if !skipped && !got.Restorable() {
				continue
			}
			m = got
			return nil
		}
		return catalog.ErrNotFound
	})
	if err != nil {
		return m, fmt.Errorf("catalog: latest marker of %q: %w", service, err)
	}
	return m, nil
}

// AddEvent implements catalog.Catalog.
func (c *Catalog) AddEvent(ctx context.Context, e catalog.Event) (catalog.Event, error) {
	if e.Time.IsZero() {
		e.Time = time.Now()
	}
	if e.Severity == "" {
		e.Severity = catalog.Info
	}
	err := c.update(ctx, func(tx *bolt.Tx) error {
		eb := tx.Bucket(bEvents)
		e.Seq = nextSeq(tx, "seq.event")
		if err := put(eb, be64(e.Seq), e); err != nil {
			return err
		}
		return c.trim(eb, e)
	})
	if err != nil {
		return e, fmt.Errorf("catalog: add event: %w", err)
	}
	return e, nil
}

// trim enforces the event bound after newest was added.
func (c *Catalog) trim(eb *bolt.Bucket, newest catalog.Event) error {
	// Sequence numbers are dense, so the count is newest.Seq - first + 1.
	cur := eb.Cursor()
	k, v := cur.First()
	cutoff := newest.Time.Add(-c.opts.MaxEventAge)
	for k != nil {
		seq := binary.BigEndian.Uint64(k)
		drop := newest.Seq-seq+1 > uint64(c.opts.MaxEvents)
		if !drop {
			var old struct {
				Time time.Time `json:"time"`
			}
			if err := json.Unmarshal(v, &old); err != nil {
				return err
			}
			drop = old.Time.Before(cutoff)
		}
		if !drop {
			return nil
		}
		if err := cur.Delete(); err != nil {
			return err
		}
		k, v = cur.Seek(be64(seq + 1))
	}
	return nil
}

// Events implements catalog.Catalog.
func (c *Catalog) Events(ctx context.Context, f catalog.EventFilter) ([]catalog.Event, error) {
	var out []catalog.Event
	err := c.view(ctx, func(tx *bolt.Tx) error {
		cur := tx.Bucket(bEvents).Cursor()
		match := func(v []byte) (catalog.Event, bool, error) {
			var e catalog.Event
			if err := json.Unmarshal(v, &e); err != nil {
				return e, false, err
			}
			ok := (f.Service == "" || e.Service == f.Service) && (f.Type == "" || e.Type == f.Type) && !e.Time.Before(f.Since)
			return e, ok, nil
		}
		if f.Limit > 0 {
			for k, v := cur.Last(); k != nil && len(out) < f.Limit; k, v = cur.Prev() {
				if binary.BigEndian.Uint64(k) <= f.AfterSeq {
					break
				}
				e, ok, err := match(v)
				if err != nil {
					return err
				}
				if ok {
					out = append(out, e)
				}
			}
			for i, j := 0, len(out)-1; i < j; i, j = i+1, j-1 {
				out[i], out[j] = out[j], out[i]
			}
			return nil
		}
		for k, v := cur.Seek(be64(f.AfterSeq + 1)); k != nil; k, v = cur.Next() {
			e, ok, err := match(v)
			if err != nil {
				return err
			}
			if ok {
				out = append(out, e)
			}
		}
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("catalog: events: %w", err)
	}
	return out, nil
}

// OpenAlert implements catalog.Catalog.
func (c *Catalog) OpenAlert(ctx context.Context, a catalog.Alert) (catalog.Alert, error) {
	err := c.update(ctx, func(tx *bolt.Tx) error {
		ab := tx.Bucket(bAlerts)
		found := false
		err := ab.ForEach(func(_, v []byte) error {
			var o catalog.Alert
			if err := json.Unmarshal(v, &o); err != nil {
				return err
			}
			if o.Open() && o.Service == a.Service && o.Tier == a.Tier {
				a, found = o, true
			}
			return nil
		})
		if err != nil || found {
			return err
		}
		seq := nextSeq(tx, "seq.alert")
		a.ID = "a-" + strconv.FormatUint(seq, 10)
		a.End = time.Time{}
		return put(ab, be64(seq), a)
	})
	if err != nil {
		return a, fmt.Errorf("catalog: open alert: %w", err)
	}
	return a, nil
}

// CloseAlert implements catalog.Catalog.
func (c *Catalog) CloseAlert(ctx context.Context, id string, end time.Time) (catalog.Alert, error) {
	var a catalog.Alert
	err := c.update(ctx, func(tx *bolt.Tx) error {
		num, ok := strings.CutPrefix(id, "a-")
		n, err := strconv.ParseUint(num, 10, 64)
		if !ok || err != nil {
			return catalog.ErrNotFound
		}
		ab := tx.Bucket(bAlerts)
		v := ab.Get(be64(n))
		if v == nil {
			return catalog.ErrNotFound
		}
		if err := json.Unmarshal(v, &a); err != nil {
			return err
		}
		if !a.Open() {
			return nil
		}
		if end.Before(a.Start) {
			end = a.Start
		}
		a.End = end
		return put(ab, be64(n), a)
	})
	if err != nil {
		return a, fmt.Errorf("catalog: close alert %s: %w", id, err)
	}
	return a, nil
}

// Alerts implements catalog.Catalog.
func (c *Catalog) Alerts(ctx context.Context, f catalog.AlertFilter) ([]catalog.Alert, error) {
	var out []catalog.Alert
	err := c.view(ctx, func(tx *bolt.Tx) error {
		return tx.Bucket(bAlerts).ForEach(func(_, v []byte) error {
			var a catalog.Alert
			if err := json.Unmarshal(v, &a); err != nil {
				return err
			}
			if f.Service != "" && a.Service != f.Service || f.OpenOnly && !a.Open() ||
				!f.Since.IsZero() && !a.Open() && a.End.Before(f.Since) {
				return nil
			}
			out = append(out, a)
			return nil
		})
	})
	if err != nil {
		return nil, fmt.Errorf("catalog: alerts: %w", err)
	}
	sort.SliceStable(out, func(i, j int) bool { return out[i].Start.Before(out[j].Start) })
	return out, nil
}

// Heartbeat implements catalog.Catalog.
func (c *Catalog) Heartbeat(ctx context.Context, t time.Time) error {
	err := c.update(ctx, func(tx *bolt.Tx) error {
		return tx.Bucket(bMeta).Put([]byte("heartbeat"), be64(uint64(t.UnixNano())))
	})
	if err != nil {
		return fmt.Errorf("catalog: heartbeat: %w", err)
	}
	return nil
}

// LastHeartbeat implements catalog.Catalog.
func (c *Catalog) LastHeartbeat(ctx context.Context) (time.Time, error) {
	var t time.Time
	err := c.view(ctx, func(tx *bolt.Tx) error {
		if v := tx.Bucket(bMeta).Get([]byte("heartbeat")); len(v) == 8 {
			t = time.Unix(0, int64(binary.BigEndian.Uint64(v))).UTC()
		}
		return nil
	})
	if err != nil {
		return t, fmt.Errorf("catalog: heartbeat: %w", err)
	}
	return t, nil
}

// AddDowntime implements catalog.Catalog.
func (c *Catalog) AddDowntime(ctx context.Context, d catalog.Downtime) error {
	err := c.update(ctx, func(tx *bolt.Tx) error {
		return put(tx.Bucket(bDowntimes), be64(uint64(max(d.Start.UnixNano(), 0))), d)
	})
	if err != nil {
		return fmt.Errorf("catalog: add downtime: %w", err)
	}
	return nil
}

// Downtimes implements catalog.Catalog.
func (c *Catalog) Downtimes(ctx context.Context, since time.Time) ([]catalog.Downtime, error) {
	var out []catalog.Downtime
	err := c.view(ctx, func(tx *bolt.Tx) error {
		return tx.Bucket(bDowntimes).ForEach(func(_, v []byte) error {
			var d catalog.Downtime
			if err := json.Unmarshal(v, &d); err != nil {
				return err
			}
			if !d.End.Before(since) {
				out = append(out, d)
			}
			return nil
		})
	})
	if err != nil {
		return nil, fmt.Errorf("catalog: downtimes: %w", err)
	}
	return out, nil
}
