package journal

import (
	"encoding/binary"
	"errors"
	"fmt"
	"hash/crc32"
	"path"
	"strconv"
	"strings"
)

const (
	segHeaderSize  = 64
	segMagic       = "LSJSEG01"
	segVersion     = 1
	segSuffix      = ".wal"
	syncedSlotOff  = 40
	syncedSlotSize = 12
)

// Loc addresses a byte in the log: the segment number in the high 24 bits and
// the offset inside the segment in the low 40.
type Loc uint64

// MakeLoc builds a Loc.
func MakeLoc(seg uint64, off int64) Loc { return Loc(seg<<40 | uint64(off)&(1<<40-1)) }

// Segment returns the segment number.
func (l Loc) Segment() uint64 { return uint64(l) >> 40 }

// Offset returns the byte offset inside the segment.
func (l Loc) Offset() int64 { return int64(uint64(l) & (1<<40 - 1)) }

// Add returns l moved n bytes further in the same segment.
func (l Loc) Add(n int64) Loc { return MakeLoc(l.Segment(), l.Offset()+n) }

func (l Loc) String() string { return fmt.Sprintf("%d:%d", l.Segment(), l.Offset()) }

// DataOffset is the distance from a record's Loc to its first data byte.
const DataOffset = RecordOverhead

type segHeader struct {
	num           uint64
	firstSeq      uint64
	syncedThrough int64
}

func segName(num uint64) string { return fmt.Sprintf("%016x%s", num, segSuffix) }

func parseSegName(name string) (uint64, bool) {
	if !strings.HasSuffix(name, segSuffix) || len(name) != 16+len(segSuffix) {
		return 0, false
	}
	n, err := strconv.ParseUint(strings.TrimSuffix(name, segSuffix), 16, 64)
	return n, err == nil
}

func encodeSegHeader(h segHeader) []byte {
	b := make([]byte, segHeaderSize)
	copy(b, segMagic)
	binary.LittleEndian.PutUint32(b[8:], segVersion)
	binary.LittleEndian.PutUint64(b[16:], h.num)
	binary.LittleEndian.PutUint64(b[24:], h.firstSeq)
	binary.LittleEndian.PutUint32(b[32:], crc32.Checksum(b[:32], castagnoli))
	copy(b[syncedSlotOff:], encodeSyncedSlot(h.syncedThrough))
	return b
}

func encodeSyncedSlot(off int64) []byte {
	b := make([]byte, syncedSlotSize)
	binary.LittleEndian.PutUint64(b, uint64(off))
	binary.LittleEndian.PutUint32(b[8:], crc32.Checksum(b[:8], castagnoli))
	return b
}

var errBadHeader = errors.New("journal: bad segment header")

func decodeSegHeader(b []byte) (segHeader, error) {
	var h segHeader
	if len(b) < segHeaderSize {
		return h, fmt.Errorf("%w: %d bytes, want %d", errBadHeader, len(b), segHeaderSize)
	}
	if string(b[:8]) != segMagic {
		return h, fmt.Errorf("%w: magic %q, want %q", errBadHeader, b[:8], segMagic)
	}
	if got, want := crc32.Checksum(b[:32], castagnoli), binary.LittleEndian.Uint32(b[32:]); got != want {
		return h, fmt.Errorf("%w: crc mismatch: stored %08x, computed %08x", errBadHeader, want, got)
	}
	if v := binary.LittleEndian.Uint32(b[8:]); v != segVersion {
		return h, fmt.Errorf("%w: format version %d, this build reads %d", errBadHeader, v, segVersion)
	}
	h.num = binary.LittleEndian.Uint64(b[16:])
	h.firstSeq = binary.LittleEndian.Uint64(b[24:])
	slot := b[syncedSlotOff : syncedSlotOff+syncedSlotSize]
	// A damaged slot only makes torn-tail repair more permissive, never
	// loses a record: treat it as "nothing known durable".
	h.syncedThrough = segHeaderSize
	if crc32.Checksum(slot[:8], castagnoli) == binary.LittleEndian.Uint32(slot[8:]) {
		h.syncedThrough = int64(binary.LittleEndian.Uint64(slot))
	}
	return h, nil
}

// Damage describes one problem found in the log.
type Damage struct {
	Segment string // file name
	Offset  int64
	Problem string
	// TornTail is true when the damage is a write that never completed:
	// safe to cut off.
	TornTail bool
}

func (d Damage) String() string {
	kind := "corrupt"
	if d.TornTail {
		kind = "torn tail"
	}
	return fmt.Sprintf("%s at offset %d: %s (%s)", d.Segment, d.Offset, d.Problem, kind)
}

func segPath(dir string, num uint64) string { return path.Join(dir, segName(num)) }
