package journal

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path"
	"strings"

	"github.com/lockstep-io/lockstep/engine/vfs"
)

// VerifyReport is the result of checking every segment of a log.
type VerifyReport struct {
	Dir      string
	Segments int
	Records  uint64
	FirstSeq uint64
	LastSeq  uint64
	Damage   []Damage
}

// OK reports whether no damage was found.
func (r *VerifyReport) OK() bool { return len(r.Damage) == 0 }

// Repairable reports whether every damage found is a torn tail.
func (r *VerifyReport) Repairable() bool {
	for _, d := range r.Damage {
		if !d.TornTail {
			return false
		}
	}
	return true
}

// Verify reads every segment of the log in dir, checking headers, framing,
// CRCs, sequence density and timestamp order, without changing anything.
func Verify(ctx context.Context, fsys vfs.FS, dir string) (*VerifyReport, error) {
	if fsys == nil {
		fsys = vfs.OS{}
	}
	nums, err := listSegments(fsys, dir)
	if err != nil {
		return nil, err
	}
	rep := &VerifyReport{Dir: dir, Segments: len(nums)}
	var nextSeq uint64
	var lastTS int64
	for i, num := range nums {
		if err := ctx.Err(); err != nil {
			return nil, err
		}
		name := segName(num)
		last := i == len(nums)-1
		if i > 0 && num != nums[i-1]+1 {
			rep.Damage = append(rep.Damage, Damage{Segment: segName(nums[i-1] + 1), Problem: "segment missing"})
		}
		f, err := fsys.OpenFile(path.Join(dir, name), os.O_RDONLY, 0)
		if err != nil {
			rep.Damage = append(rep.Damage, Damage{Segment: name, Problem: err.Error()})
			continue
		}
		b, err := readWhole(f)
		f.Close()
		if err != nil {
			rep.Damage = append(rep.Damage, Damage{Segment: name, Problem: err.Error()})
			continue
		}
		h, err := decodeSegHeader(b)
		if err != nil {
			rep.Damage = append(rep.Damage, Damage{Segment: name, Problem: err.Error()})
			nextSeq = 0
			continue
		}
		if i == 0 || nextSeq == 0 {
			rep.FirstSeq = h.firstSeq
		} else if h.firstSeq != nextSeq {
			rep.Damage = append(rep.Damage, Damage{Segment: name, Problem: fmt.Sprintf("starts at seq %d, expected %d", h.firstSeq, nextSeq)})
		}
		nextSeq = h.firstSeq
		off := int64(segHeaderSize)
		for off < int64(len(b)) {
			if off >= h.syncedThrough && b[off] == 0 && zeroTail(b[off:]) {
				break // preallocated, never written
			}
			rec, err := DecodeRecord(b[off:])
			if err == nil {
				switch {
				case rec.Seq != nextSeq:
					err = fmt.Errorf("%w: seq %d, expected %d", ErrCorrupt, rec.Seq, nextSeq)
				case rec.TS <= lastTS:
					err = fmt.Errorf("%w: seq %d timestamp %d not after %d", ErrCorrupt, rec.Seq, rec.TS, lastTS)
				}
			}
			if err != nil {
				torn := errors.Is(err, ErrTorn) && last && off >= h.syncedThrough
				rep.Damage = append(rep.Damage, Damage{Segment: name, Offset: off, Problem: err.Error(), TornTail: torn})
				break
			}
			rep.Records++
			rep.LastSeq = rec.Seq
			nextSeq = rec.Seq + 1
			lastTS = rec.TS
			off += rec.Size()
		}
	}
	return rep, nil
}

// ErrUnsafeRepair is returned when damage is found that repair would have to
// discard durable records to fix.
var ErrUnsafeRepair = errors.New("journal: damage cannot be repaired without discarding durable records")

// Repair fixes what can be fixed without losing a durable record: it cuts a
// torn tail off the newest segment (keeping a copy under torn/) and removes
// leftover temporary files. It refuses, with ErrUnsafeRepair and the report,
// when any other damage is present, and changes nothing then.
func Repair(ctx context.Context, fsys vfs.FS, dir string) (*VerifyReport, error) {
	if fsys == nil {
		fsys = vfs.OS{}
	}
	rep, err := Verify(ctx, fsys, dir)
	if err != nil {
		return nil, err
	}
	if !rep.Repairable() {
		return rep, fmt.Errorf("%w: %s", ErrUnsafeRepair, rep.Damage[0])
	}
	// Opening the log performs exactly the torn-tail cut Verify predicted.
	l, _, err := Open(ctx, dir, Options{FS: fsys}, nil)
	if err != nil {
		return rep, err
	}
	if err := l.Close(); err != nil {
		return rep, err
	}
	names, err := fsys.ReadDir(dir)
	if err != nil {
		return rep, err
	}
	for _, n := range names {
		if strings.HasSuffix(n, segSuffix+".tmp") {
			if err := fsys.Remove(path.Join(dir, n)); err != nil {
				return rep, fmt.Errorf("journal: remove %s: %w", n, err)
			}
		}
	}
	return rep, nil
}
