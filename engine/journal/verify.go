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
	var order recordOrder
	acked := ackedAfter(segHeaders(fsys, dir, nums))
	// setAside reports the segments from i on as following a torn tail:
	// Open sets them aside, since none of their records was acknowledged.
	setAside := func(i int) {
		for _, n := range nums[i:] {
			rep.Damage = append(rep.Damage, Damage{Segment: segName(n), Problem: "follows the torn tail of " + segName(nums[i-1]) + "; nothing in it was acknowledged", TornTail: true})
		}
	}
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
			order.nextSeq = 0
			continue
		}
		if i == 0 || order.nextSeq == 0 {
			rep.FirstSeq = h.firstSeq
		} else if h.firstSeq != order.nextSeq && !acked[i-1] {
			setAside(i)
			break
		} else if h.firstSeq != order.nextSeq {
			rep.Damage = append(rep.Damage, Damage{Segment: name, Problem: fmt.Sprintf("starts at seq %d, expected %d", h.firstSeq, order.nextSeq)})
		}
		order.nextSeq = h.firstSeq
		off, derr, _ := scanRecords(b, h, &order, func(rec *Record, _ int64) error {
			rep.Records++
			rep.LastSeq = rec.Seq
			return nil
		})
		if derr != nil {
			torn := errors.Is(derr, ErrTorn) && !acked[i] && off >= h.syncedThrough
			rep.Damage = append(rep.Damage, Damage{Segment: name, Offset: off, Problem: derr.Error(), TornTail: torn})
			if torn && !last {
				setAside(i + 1)
				break
			}
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
