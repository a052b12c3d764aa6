package journal

import "fmt"

// recordOrder is what the next record must continue: dense sequence
// numbers and strictly increasing timestamps.
type recordOrder struct {
	nextSeq uint64
	lastTS  int64
}

// next checks that rec continues the order and advances it past rec.
func (o *recordOrder) next(rec *Record) error {
	if rec.Seq != o.nextSeq {
		return fmt.Errorf("%w: record seq %d, expected %d", ErrCorrupt, rec.Seq, o.nextSeq)
	}
	if rec.TS <= o.lastTS {
		return fmt.Errorf("%w: record seq %d timestamp %d not after %d", ErrCorrupt, rec.Seq, rec.TS, o.lastTS)
	}
	o.nextSeq++
	o.lastTS = rec.TS
	return nil
}

// scanRecords walks the records of a segment image b, whose header h is
// already decoded, checking each against o and passing each good one to
// visit with its offset. Open and Verify both read segments through it, so
// they cannot disagree on what a good segment is.
//
// It returns the offset where the records end: the end of b, preallocated
// zeros past the synced-through mark, or the first record that does not
// decode or breaks the order, which is then returned as damage (ErrTorn or
// ErrCorrupt). An error from visit stops the walk and is returned as err.
func scanRecords(b []byte, h segHeader, o *recordOrder, visit func(rec *Record, off int64) error) (end int64, damage, err error) {
	off := int64(segHeaderSize)
	for off < int64(len(b)) {
		if off >= h.syncedThrough && b[off] == 0 && zeroTail(b[off:]) {
			return off, nil, nil // preallocated, never written
		}
		rec, derr := DecodeRecord(b[off:])
		if derr == nil {
			derr = o.next(rec)
		}
		if derr != nil {
			return off, derr, nil
		}
		if visit != nil {
			if err := visit(rec, off); err != nil {
				return off, nil, err
			}
		}
		off += rec.Size()
	}
	return off, nil, nil
}
