// Package pdu encodes and decodes iSCSI protocol data units (RFC 7143
// section 11): the 48-byte basic header segment, additional header segments,
// the padded data segment and the optional CRC32C header and data digests.
package pdu

import (
	"encoding/binary"
	"errors"
	"fmt"
	"hash/crc32"
	"io"

	"github.com/lockstep-io/lockstep/engine/iscsi/internal/bufpool"
)

// BHSLen is the size of the basic header segment.
const BHSLen = 48

// Opcodes (RFC 7143 section 11.1.1).
const (
	OpNOPOut     = 0x00
	OpSCSICmd    = 0x01
	OpTaskMgmt   = 0x02
	OpLoginReq   = 0x03
	OpTextReq    = 0x04
	OpDataOut    = 0x05
	OpLogoutReq  = 0x06
	OpSNACK      = 0x10
	OpNOPIn      = 0x20
	OpSCSIResp   = 0x21
	OpTaskResp   = 0x22
	OpLoginResp  = 0x23
	OpTextResp   = 0x24
	OpDataIn     = 0x25
	OpLogoutResp = 0x26
	OpR2T        = 0x31
	OpAsync      = 0x32
	OpReject     = 0x3f
)

// ReservedTag is the all-ones initiator or target transfer tag meaning "none".
const ReservedTag = 0xffffffff

// Errors the decoder classifies malformed input with.
var (
	ErrTooLarge  = errors.New("pdu: data segment exceeds the negotiated limit")
	ErrMalformed = errors.New("pdu: malformed header")
	ErrDigest    = errors.New("pdu: digest mismatch")
)

// Digests says which CRC32C digests a connection negotiated.
type Digests struct{ Header, Data bool }

var castagnoli = crc32.MakeTable(crc32.Castagnoli)

// crc is the iSCSI digest of the concatenated parts; it travels
// little-endian (RFC 7143 appendix B.4: 32 zero bytes give aa 36 91 8a).
func crc(parts ...[]byte) [4]byte {
	var c uint32
	for _, p := range parts {
		c = crc32.Update(c, castagnoli, p)
	}
	var b [4]byte
	binary.LittleEndian.PutUint32(b[:], c)
	return b
}

// PDU is one iSCSI PDU. The header is kept raw; accessors read and write the
// fields whose position is common to all opcodes, and opcode-specific fields
// are read with the U32/U16 helpers at their RFC offsets.
type PDU struct {
	BHS  [BHSLen]byte
	AHS  []byte
	Data []byte
}

// Opcode returns the 6-bit opcode.
func (p *PDU) Opcode() byte { return p.BHS[0] & 0x3f }

// Immediate reports the I bit.
func (p *PDU) Immediate() bool { return p.BHS[0]&0x40 != 0 }

// SetOpcode sets the opcode and the I bit.
func (p *PDU) SetOpcode(op byte, immediate bool) {
	p.BHS[0] = op & 0x3f
	if immediate {
		p.BHS[0] |= 0x40
	}
}

// Final reports the F bit (byte 1, bit 7).
func (p *PDU) Final() bool { return p.BHS[1]&0x80 != 0 }

// Flags returns byte 1.
func (p *PDU) Flags() byte { return p.BHS[1] }

// ITT returns the initiator task tag.
func (p *PDU) ITT() uint32 { return p.U32(16) }

// SetITT sets the initiator task tag.
func (p *PDU) SetITT(v uint32) { p.PutU32(16, v) }

// LUN returns the raw 8-byte LUN field.
func (p *PDU) LUN() uint64 { return binary.BigEndian.Uint64(p.BHS[8:16]) }

// SetLUN sets the raw 8-byte LUN field.
func (p *PDU) SetLUN(v uint64) { binary.BigEndian.PutUint64(p.BHS[8:16], v) }

// U32 reads the big-endian 32-bit field at off.
func (p *PDU) U32(off int) uint32 { return binary.BigEndian.Uint32(p.BHS[off : off+4]) }

// PutU32 writes the big-endian 32-bit field at off.
func (p *PDU) PutU32(off int, v uint32) { binary.BigEndian.PutUint32(p.BHS[off:off+4], v) }

// U16 reads the big-endian 16-bit field at off.
func (p *PDU) U16(off int) uint16 { return binary.BigEndian.Uint16(p.BHS[off : off+2]) }

// PutU16 writes the big-endian 16-bit field at off.
func (p *PDU) PutU16(off int, v uint16) { binary.BigEndian.PutUint16(p.BHS[off:off+2], v) }

// DataSegmentLength returns the length field of the header (without padding).
func (p *PDU) DataSegmentLength() int {
	return int(p.BHS[5])<<16 | int(p.BHS[6])<<8 | int(p.BHS[7])
}

// TotalAHSLength returns the AHS length in bytes.
func (p *PDU) TotalAHSLength() int { return int(p.BHS[4]) * 4 }

// Common field offsets shared by many opcodes.
const (
	OffCmdSN     = 24 // requests
	OffExpStatSN = 28 // requests
	OffStatSN    = 24 // responses
	OffExpCmdSN  = 28 // responses
	OffMaxCmdSN  = 32 // responses
	OffTTT       = 20
)

// CDB returns the command descriptor block of a SCSI Command PDU, including
// an extended CDB carried in an AHS of type 1.
func (p *PDU) CDB() []byte {
	cdb := p.BHS[32:48]
	for ahs := p.AHS; len(ahs) >= 4; {
		l := int(binary.BigEndian.Uint16(ahs[0:2]))
		typ := ahs[2]
		total := (3 + l + 3) &^ 3
		if total > len(ahs) || l < 1 {
			break
		}
		if typ == 1 {
			ext := make([]byte, 0, 16+l-1)
			ext = append(ext, cdb...)
			ext = append(ext, ahs[4:3+l]...)
			return ext
		}
		ahs = ahs[total:]
	}
	return cdb
}

// Read reads one PDU without digests from r. maxData bounds the data
// segment length a peer may send; a larger one fails with ErrTooLarge before
// anything is allocated.
func Read(r io.Reader, maxData int) (*PDU, error) {
	return ReadDigests(r, maxData, Digests{})
}

// ReadDigests reads one PDU and checks the digests d says are present.
func ReadDigests(r io.Reader, maxData int, d Digests) (*PDU, error) {
	p := &PDU{}
	if _, err := io.ReadFull(r, p.BHS[:]); err != nil {
		return nil, err
	}
	if err := p.readRest(r, maxData, d); err != nil {
		return nil, err
	}
	return p, nil
}

func (p *PDU) readRest(r io.Reader, maxData int, d Digests) error {
	// Check the lengths before reading anything more, so that a garbage
	// header fails at once instead of waiting for bytes that never come.
	dl := p.DataSegmentLength()
	if dl > maxData {
		return fmt.Errorf("%w: %d bytes, limit %d", ErrTooLarge, dl, maxData)
	}
	if n := p.TotalAHSLength(); n > 0 {
		p.AHS = make([]byte, n)
		if _, err := io.ReadFull(r, p.AHS); err != nil {
			return fmt.Errorf("pdu: reading AHS: %w", noEOF(err))
		}
	}
	var dig [4]byte
	if d.Header {
		if _, err := io.ReadFull(r, dig[:]); err != nil {
			return fmt.Errorf("pdu: reading header digest: %w", noEOF(err))
		}
		if crc(p.BHS[:], p.AHS) != dig {
			return fmt.Errorf("%w: header", ErrDigest)
		}
	}
	if dl > 0 {
		buf := bufpool.Get((dl + 3) &^ 3)
		if _, err := io.ReadFull(r, buf); err != nil {
			return fmt.Errorf("pdu: reading data segment: %w", noEOF(err))
		}
		p.Data = buf[:dl]
		if d.Data {
			if _, err := io.ReadFull(r, dig[:]); err != nil {
				return fmt.Errorf("pdu: reading data digest: %w", noEOF(err))
			}
			if crc(buf) != dig {
				return fmt.Errorf("%w: data", ErrDigest)
			}
		}
	}
	return nil
}

// Release recycles the data segment of a PDU that Read or ReadDigests
// returned. Neither p.Data nor any slice of it may be used afterwards;
// without Release the garbage collector reclaims it as usual.
func (p *PDU) Release() {
	if p.Data != nil {
		bufpool.Put(p.Data[:0])
		p.Data = nil
	}
}

// Decode parses a PDU from a complete buffer, as Read would.
func Decode(b []byte, maxData int) (*PDU, int, error) {
	if len(b) < BHSLen {
		return nil, 0, fmt.Errorf("%w: %d bytes, need %d", ErrMalformed, len(b), BHSLen)
	}
	p := &PDU{}
	copy(p.BHS[:], b)
	r := &sliceReader{b: b[BHSLen:]}
	if err := p.readRest(r, maxData, Digests{}); err != nil {
		return nil, 0, err
	}
	return p, BHSLen + r.n, nil
}

type sliceReader struct {
	b []byte
	n int
}

func (s *sliceReader) Read(p []byte) (int, error) {
	if len(s.b) == 0 {
		return 0, io.EOF
	}
	n := copy(p, s.b)
	s.b = s.b[n:]
	s.n += n
	return n, nil
}

func noEOF(err error) error {
	if err == io.EOF {
		return io.ErrUnexpectedEOF
	}
	return err
}

var zeroPad [4]byte

// Encode returns the wire form of p, setting the length fields from AHS and
// Data. The AHS must be a multiple of 4 bytes.
func (p *PDU) Encode() []byte {
	p.setLengths()
	dl := len(p.Data)
	out := make([]byte, 0, BHSLen+len(p.AHS)+dl+3)
	out = append(out, p.BHS[:]...)
	out = append(out, p.AHS...)
	out = append(out, p.Data...)
	out = append(out, zeroPad[:(4-dl%4)%4]...)
	return out
}

func (p *PDU) setLengths() {
	p.BHS[4] = byte(len(p.AHS) / 4)
	dl := len(p.Data)
	p.BHS[5], p.BHS[6], p.BHS[7] = byte(dl>>16), byte(dl>>8), byte(dl)
}

// WriteTo writes p to w without digests and without copying the data
// segment.
func (p *PDU) WriteTo(w io.Writer) (int64, error) {
	return p.WriteDigests(w, Digests{})
}

// WriteDigests writes p to w with the digests d asks for.
func (p *PDU) WriteDigests(w io.Writer, d Digests) (int64, error) {
	p.setLengths()
	pad := zeroPad[:(4-len(p.Data)%4)%4]
	var hd, dd []byte
	if d.Header {
		c := crc(p.BHS[:], p.AHS)
		hd = c[:]
	}
	if d.Data && len(p.Data) > 0 {
		c := crc(p.Data, pad)
		dd = c[:]
	}
	var n int64
	for _, b := range [][]byte{p.BHS[:], p.AHS, hd, p.Data, pad, dd} {
		if len(b) == 0 {
			continue
		}
		m, err := w.Write(b)
		n += int64(m)
		if err != nil {
			return n, err
		}
	}
	return n, nil
}

// MaxDataSegment is the largest length the 24-bit field can express.
const MaxDataSegment = 1<<24 - 1
