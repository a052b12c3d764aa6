package journal

import (
	"encoding/binary"
	"errors"
	"fmt"
	"hash/crc32"
	"slices"
)

// RecordType tells what a record does.
type RecordType uint8

// Record types. Values are part of the on-disk format.
const (
	TypeWrite  RecordType = 1
	TypeZero   RecordType = 2
	TypeUnmap  RecordType = 3
	TypeMarker RecordType = 4
)

func (t RecordType) String() string {
	switch t {
	case TypeWrite:
		return "write"
	case TypeZero:
		return "zero"
	case TypeUnmap:
		return "unmap"
	case TypeMarker:
		return "marker"
	}
	return fmt.Sprintf("type(%d)", uint8(t))
}

const (
	frameSize      = 8
	bodyHeaderSize = 40
	// RecordOverhead is the bytes a record adds beyond its data.
	RecordOverhead = frameSize + bodyHeaderSize
	// MaxRecordBody bounds a record body, so that a corrupt length can never
	// make a reader allocate more.
	MaxRecordBody = 16<<20 + bodyHeaderSize + 4096
	// MaxWrite is the largest data payload of one write record.
	MaxWrite = 16 << 20
)

var castagnoli = crc32.MakeTable(crc32.Castagnoli)

// Errors returned while decoding.
var (
	// ErrTorn is a record that ends early or whose CRC does not match.
	ErrTorn = errors.New("journal: torn or damaged record")
	// ErrCorrupt is damage that cannot be a write that never completed.
	ErrCorrupt = errors.New("journal: corrupt")
)

// Record is one decoded journal record.
type Record struct {
	Type     RecordType
	Volume   uint32
	Seq      uint64
	TS       int64
	Offset   int64
	Length   uint32
	Data     []byte     // TypeWrite only; aliases the read buffer
	Marker   *MarkerRec // TypeMarker only
	bodySize int
}

// MarkerRec is the payload of a marker record.
type MarkerRec struct {
	ID       string
	Service  string
	Class    string
	Volumes  []uint32
	Evidence []byte
}

// Size is the record's framed size on disk.
func (r *Record) Size() int64 { return int64(frameSize + r.bodySize) }

// encodedBodySize returns the body size of r.
func encodedBodySize(r *Record) int {
	n := bodyHeaderSize
	switch r.Type {
	case TypeWrite:
		n += len(r.Data)
	case TypeMarker:
		n += markerPayloadSize(r.Marker)
	}
	return n
}

func markerPayloadSize(m *MarkerRec) int {
	n := uvarintLen(uint64(len(m.ID))) + len(m.ID)
	n += uvarintLen(uint64(len(m.Service))) + len(m.Service)
	n += uvarintLen(uint64(len(m.Class))) + len(m.Class)
	n += uvarintLen(uint64(len(m.Volumes)))
	for _, v := range m.Volumes {
		n += uvarintLen(uint64(v))
	}
	n += uvarintLen(uint64(len(m.Evidence))) + len(m.Evidence)
	return n
}

func uvarintLen(v uint64) int {
	var b [binary.MaxVarintLen64]byte
	return binary.PutUvarint(b[:], v)
}

// appendRecord encodes r (with Seq and TS set) onto dst.
func appendRecord(dst []byte, r *Record) []byte {
	body := encodedBodySize(r)
	start := len(dst)
	// Grow without zeroing what is overwritten anyway: dst is a reused
	// buffer, so every byte not written below is cleared explicitly.
	dst = slices.Grow(dst, frameSize+body)[:start+frameSize+body]
	b := dst[start+frameSize:]
	clear(b[:bodyHeaderSize])
	b[0] = byte(r.Type)
	binary.LittleEndian.PutUint32(b[4:], r.Volume)
	binary.LittleEndian.PutUint64(b[8:], r.Seq)
	binary.LittleEndian.PutUint64(b[16:], uint64(r.TS))
	binary.LittleEndian.PutUint64(b[24:], uint64(r.Offset))
	binary.LittleEndian.PutUint32(b[32:], r.Length)
	switch r.Type {
	case TypeWrite:
		copy(b[bodyHeaderSize:], r.Data)
	case TypeMarker:
		clear(b[bodyHeaderSize:])
		p := b[bodyHeaderSize:bodyHeaderSize]
		m := r.Marker
		p = appendBytes(p, []byte(m.ID))
		p = appendBytes(p, []byte(m.Service))
		p = appendBytes(p, []byte(m.Class))
		p = binary.AppendUvarint(p, uint64(len(m.Volumes)))
		for _, v := range m.Volumes {
			p = binary.AppendUvarint(p, uint64(v))
		}
		appendBytes(p, m.Evidence)
	}
	binary.LittleEndian.PutUint32(dst[start:], uint32(body))
	binary.LittleEndian.PutUint32(dst[start+4:], crc32.Checksum(b, castagnoli))
	return dst
}

func appendBytes(p, v []byte) []byte {
	p = binary.AppendUvarint(p, uint64(len(v)))
	return append(p, v...)
}

// frameLen reads a frame header and returns the body length, or ErrTorn when
// the header cannot start a valid record.
func frameLen(hdr []byte) (int, uint32, error) {
	if len(hdr) < frameSize {
		return 0, 0, fmt.Errorf("%w: %d bytes left, a frame header needs %d", ErrTorn, len(hdr), frameSize)
	}
	n := binary.LittleEndian.Uint32(hdr)
	sum := binary.LittleEndian.Uint32(hdr[4:])
	if n < bodyHeaderSize || n > MaxRecordBody {
		return 0, 0, fmt.Errorf("%w: body length %d outside [%d, %d]", ErrTorn, n, bodyHeaderSize, MaxRecordBody)
	}
	return int(n), sum, nil
}

// DecodeRecord decodes one framed record from the start of b. The returned
// record's Data aliases b.
func DecodeRecord(b []byte) (*Record, error) {
	n, sum, err := frameLen(b)
	if err != nil {
		return nil, err
	}
	if len(b) < frameSize+n {
		return nil, fmt.Errorf("%w: body of %d bytes truncated to %d", ErrTorn, n, len(b)-frameSize)
	}
	body := b[frameSize : frameSize+n]
	if got := crc32.Checksum(body, castagnoli); got != sum {
		return nil, fmt.Errorf("%w: crc mismatch: stored %08x, computed %08x", ErrTorn, sum, got)
	}
	return decodeBody(body)
}

func decodeBody(body []byte) (*Record, error) {
	r := &Record{
		Type:     RecordType(body[0]),
		Volume:   binary.LittleEndian.Uint32(body[4:]),
		Seq:      binary.LittleEndian.Uint64(body[8:]),
		TS:       int64(binary.LittleEndian.Uint64(body[16:])),
		Offset:   int64(binary.LittleEndian.Uint64(body[24:])),
		Length:   binary.LittleEndian.Uint32(body[32:]),
		bodySize: len(body),
	}
	rest := body[bodyHeaderSize:]
	switch r.Type {
	case TypeWrite:
		if int(r.Length) != len(rest) {
			return nil, fmt.Errorf("%w: write record seq %d: length field %d, data %d bytes", ErrCorrupt, r.Seq, r.Length, len(rest))
		}
		r.Data = rest
	case TypeZero, TypeUnmap:
		if len(rest) != 0 {
			return nil, fmt.Errorf("%w: %s record seq %d carries %d data bytes", ErrCorrupt, r.Type, r.Seq, len(rest))
		}
	case TypeMarker:
		m, err := decodeMarker(rest)
		if err != nil {
			return nil, fmt.Errorf("%w: marker record seq %d: %v", ErrCorrupt, r.Seq, err)
		}
		r.Marker = m
	default:
		return nil, fmt.Errorf("%w: record seq %d has unknown type %d", ErrCorrupt, r.Seq, body[0])
	}
	if r.Offset < 0 {
		return nil, fmt.Errorf("%w: record seq %d has negative offset", ErrCorrupt, r.Seq)
	}
	return r, nil
}

func decodeMarker(p []byte) (*MarkerRec, error) {
	m := &MarkerRec{}
	var s []byte
	var err error
	if s, p, err = readBytes(p); err != nil {
		return nil, fmt.Errorf("id: %w", err)
	}
	m.ID = string(s)
	if s, p, err = readBytes(p); err != nil {
		return nil, fmt.Errorf("service: %w", err)
	}
	m.Service = string(s)
	if s, p, err = readBytes(p); err != nil {
		return nil, fmt.Errorf("class: %w", err)
	}
	m.Class = string(s)
	n, k := binary.Uvarint(p)
	if k <= 0 || n > uint64(len(p)) {
		return nil, errors.New("bad volume count")
	}
	p = p[k:]
	m.Volumes = make([]uint32, 0, n)
	for i := uint64(0); i < n; i++ {
		v, k := binary.Uvarint(p)
		if k <= 0 || v > 1<<32-1 {
			return nil, errors.New("bad volume id")
		}
		m.Volumes = append(m.Volumes, uint32(v))
		p = p[k:]
	}
	if s, p, err = readBytes(p); err != nil {
		return nil, fmt.Errorf("evidence: %w", err)
	}
	m.Evidence = append([]byte(nil), s...)
	if len(p) != 0 {
		return nil, fmt.Errorf("%d trailing bytes", len(p))
	}
	return m, nil
}

func readBytes(p []byte) ([]byte, []byte, error) {
	n, k := binary.Uvarint(p)
	if k <= 0 {
		return nil, nil, errors.New("bad length prefix")
	}
	p = p[k:]
	if n > uint64(len(p)) {
		return nil, nil, fmt.Errorf("length %d exceeds remaining %d bytes", n, len(p))
	}
	return p[:n], p[n:], nil
}
