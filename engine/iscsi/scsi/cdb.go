package scsi

import "encoding/binary"

// Operation codes the disk implements.
const (
	OpTestUnitReady      = 0x00
	OpRequestSense       = 0x03
	OpRead6              = 0x08
	OpWrite6             = 0x0a
	OpInquiry            = 0x12
	OpModeSelect6        = 0x15
	OpReserve6           = 0x16
	OpRelease6           = 0x17
	OpModeSense6         = 0x1a
	OpStartStopUnit      = 0x1b
	OpPreventAllow       = 0x1e
	OpReadCapacity10     = 0x25
	OpRead10             = 0x28
	OpWrite10            = 0x2a
	OpWriteVerify10      = 0x2e
	OpVerify10           = 0x2f
	OpPrefetch10         = 0x34
	OpSyncCache10        = 0x35
	OpReadDefectData10   = 0x37
	OpWriteSame10        = 0x41
	OpUnmap              = 0x42
	OpReserve10          = 0x56
	OpRelease10          = 0x57
	OpModeSense10        = 0x5a
	OpExtendedCopy       = 0x83
	OpReceiveCopyResults = 0x84
	OpRead16             = 0x88
	OpCompareAndWrite    = 0x89
	OpOrWrite16          = 0x8b
	OpWrite16            = 0x8a
	OpWriteVerify16      = 0x8e
	OpVerify16           = 0x8f
	OpPrefetch16         = 0x90
	OpSyncCache16        = 0x91
	OpWriteSame16        = 0x93
	OpWriteAtomic16      = 0x9c
	OpServiceActionIn16  = 0x9e
	OpReportLUNs         = 0xa0
	OpMaintenanceIn      = 0xa3
	OpRead12             = 0xa8
	OpWrite12            = 0xaa
	OpWriteVerify12      = 0xae
	OpVerify12           = 0xaf
	OpReadDefectData12   = 0xb7
	SAReadCapacity16     = 0x10
	SAGetLBAStatus       = 0x12
	SAReportSupportedOps = 0x0c
	saCopyStatus         = 0x00 // RECEIVE COPY RESULTS
	saOperatingParams    = 0x03
)

// Kind groups commands that execute the same way.
type Kind int

// Command kinds.
const (
	KindUnsupported Kind = iota
	KindTestUnitReady
	KindRequestSense
	KindInquiry
	KindModeSense
	KindReadCapacity10
	KindReadCapacity16
	KindRead
	KindWrite
	KindVerify
	KindPrefetch
	KindSyncCache
	KindWriteSame
	KindUnmap
	KindReportLUNs
	KindReportOpcodes
	KindCompareAndWrite
	KindOrWrite
	KindGetLBAStatus
	KindNoop // START STOP UNIT, PREVENT ALLOW MEDIUM REMOVAL
	KindReserve
	KindRelease
	KindReadDefectData
	KindWriteAtomic
	KindExtendedCopy
	KindReceiveCopyResults
)

// Request is a parsed CDB.
type Request struct {
	CDB    []byte
	Op     byte
	Kind   Kind
	LBA    uint64
	Blocks uint32
	FUA    bool
	// Verify asks WRITE AND VERIFY / VERIFY to compare (BYTCHK).
	ByteCheck byte
	// Unmap and NDOB are the WRITE SAME flags.
	Unmap, NDOB bool
	// DataOut is the number of bytes the command expects from the
	// initiator, per the CDB.
	DataOut int
	// AllocLen is the most data-in bytes the initiator accepts, per the CDB
	// (reads: Blocks*block size).
	AllocLen int
	// Nexus is the I_T nexus the command came through; the transport sets
	// it after Parse.
	Nexus Nexus
	// Peers are the logical units EXTENDED COPY may name: those of the
	// nexus's own target. The transport sets it for that command.
	Peers []*Disk
}

// Parse decodes a CDB without touching any device. Errors come back as the
// sense to report.
func Parse(cdb []byte, blockSize int) (*Request, *Sense) {
	if len(cdb) == 0 {
		return nil, &SenseInvalidOpcode
	}
	r := &Request{CDB: cdb, Op: cdb[0]}
	need := cdbLen(cdb[0])
	if need == 0 {
		return nil, &SenseInvalidOpcode
	}
	if len(cdb) < need {
		return nil, &SenseInvalidFieldCDB
	}
	bad := &SenseInvalidFieldCDB
	be16 := func(i int) uint32 { return uint32(binary.BigEndian.Uint16(cdb[i:])) }
	be32 := func(i int) uint32 { return binary.BigEndian.Uint32(cdb[i:]) }
	be64 := func(i int) uint64 { return binary.BigEndian.Uint64(cdb[i:]) }
	bs := blockSize
	switch cdb[0] {
	case OpTestUnitReady:
		r.Kind = KindTestUnitReady
	case OpRequestSense:
		r.Kind, r.AllocLen = KindRequestSense, int(cdb[4])
	case OpInquiry:
		if cdb[1]&0x02 != 0 || (cdb[1]&0x01 == 0 && cdb[2] != 0) {
			return nil, bad
		}
		r.Kind, r.AllocLen = KindInquiry, int(be16(3))
	case OpModeSense6:
		r.Kind, r.AllocLen = KindModeSense, int(cdb[4])
	case OpModeSense10:
		r.Kind, r.AllocLen = KindModeSense, int(be16(7))
	case OpReadCapacity10:
		if cdb[8]&1 == 0 && be32(2) != 0 {
			return nil, bad
		}
		r.Kind, r.AllocLen = KindReadCapacity10, 8
	case OpServiceActionIn16:
		switch cdb[1] & 0x1f {
		case SAReadCapacity16:
			r.Kind, r.AllocLen = KindReadCapacity16, int(be32(10))
		case SAGetLBAStatus:
			// Byte 14 is SBC-4's REPORT TYPE; only 0 (all blocks) is
			// understood.
			if cdb[14] != 0 {
				return nil, bad
			}
			r.Kind, r.LBA, r.AllocLen = KindGetLBAStatus, be64(2), int(be32(10))
		default:
			return nil, &SenseInvalidFieldCDB
		}
	case OpRead6, OpWrite6:
		r.LBA = uint64(cdb[1]&0x1f)<<16 | uint64(cdb[2])<<8 | uint64(cdb[3])
		r.Blocks = uint32(cdb[4])
		if r.Blocks == 0 {
			r.Blocks = 256
		}
	case OpRead10, OpWrite10, OpWriteVerify10, OpVerify10, OpPrefetch10, OpSyncCache10, OpWriteSame10:
		r.LBA, r.Blocks = uint64(be32(2)), be16(7)
	case OpRead12, OpWrite12, OpWriteVerify12, OpVerify12:
		r.LBA, r.Blocks = uint64(be32(2)), be32(6)
	case OpRead16, OpWrite16, OpWriteVerify16, OpVerify16, OpPrefetch16, OpSyncCache16, OpWriteSame16, OpOrWrite16:
		r.LBA, r.Blocks = be64(2), be32(10)
	case OpCompareAndWrite:
		if cdb[1]>>5 != 0 {
			return nil, bad
		}
		r.Kind, r.LBA, r.Blocks = KindCompareAndWrite, be64(2), uint32(cdb[13])
		r.FUA = cdb[1]&0x08 != 0
		r.DataOut = 2 * int(r.Blocks) * bs
	case OpUnmap:
		if cdb[1]&0x01 != 0 { // ANCHOR
			return nil, bad
		}
		r.Kind, r.DataOut = KindUnmap, int(be16(7))
	case OpReportLUNs:
		if cdb[2] > 2 && cdb[2] != 0x10 && cdb[2] != 0x11 && cdb[2] != 0x12 {
			return nil, bad
		}
		r.Kind, r.AllocLen = KindReportLUNs, int(be32(6))
		if r.AllocLen < 16 {
			return nil, bad
		}
	case OpMaintenanceIn:
		if cdb[1]&0x1f != SAReportSupportedOps {
			return nil, &SenseInvalidFieldCDB
		}
		if cdb[2]&0x07 > 3 {
			return nil, bad
		}
		r.Kind, r.AllocLen = KindReportOpcodes, int(be32(6))
	case OpStartStopUnit, OpPreventAllow:
		r.Kind = KindNoop
	case OpReserve6, OpRelease6:
		// Byte 1 held SCSI-2's third-party and extent reservations, which
		// SPC-2 made obsolete.
		if cdb[1] != 0 {
			return nil, bad
		}
		r.Kind = KindReserve
		if cdb[0] == OpRelease6 {
			r.Kind = KindRelease
		}
	case OpReserve10, OpRelease10:
		if cdb[1]&0x12 != 0 || be16(7) != 0 { // 3RDPTY, LONGID, their parameter list
			return nil, bad
		}
		r.Kind = KindReserve
		if cdb[0] == OpRelease10 {
			r.Kind = KindRelease
		}
	case OpWriteAtomic16:
		// Bytes 10-11 are the ATOMIC BOUNDARY; the Block Limits page
		// reports no boundary support, so it must be 0.
		if cdb[1]>>5 != 0 || be16(10) != 0 {
			return nil, bad
		}
		r.Kind, r.LBA, r.Blocks = KindWriteAtomic, be64(2), be16(12)
		r.FUA = cdb[1]&0x08 != 0
		r.DataOut = int(r.Blocks) * bs
	case OpExtendedCopy:
		if cdb[1]&0x1f != 0 { // only LID1 (SPC-4's EXTENDED COPY (LID1))
			return nil, bad
		}
		r.Kind, r.DataOut = KindExtendedCopy, int(be32(10))
	case OpReceiveCopyResults:
		if sa := cdb[1] & 0x1f; sa != saCopyStatus && sa != saOperatingParams {
			return nil, bad
		}
		r.Kind, r.AllocLen = KindReceiveCopyResults, int(be32(10))
	case OpReadDefectData10:
		r.Kind, r.AllocLen = KindReadDefectData, int(be16(7))
	case OpReadDefectData12:
		r.Kind, r.AllocLen = KindReadDefectData, int(be32(6))
	default:
		return nil, &SenseInvalidOpcode
	}
	switch cdb[0] {
	case OpRead6, OpRead10, OpRead12, OpRead16:
		if cdb[0] != OpRead6 && (cdb[1]>>5 != 0) { // RDPROTECT without protection info
			return nil, bad
		}
		r.Kind = KindRead
		r.FUA = cdb[0] != OpRead6 && cdb[1]&0x08 != 0
		r.AllocLen = int(r.Blocks) * bs
	case OpWrite6, OpWrite10, OpWrite12, OpWrite16:
		if cdb[0] != OpWrite6 && (cdb[1]>>5 != 0) {
			return nil, bad
		}
		r.Kind = KindWrite
		r.FUA = cdb[0] != OpWrite6 && cdb[1]&0x08 != 0
		r.DataOut = int(r.Blocks) * bs
	case OpOrWrite16:
		if cdb[1]>>5 != 0 { // ORPROTECT without protection info
			return nil, bad
		}
		r.Kind = KindOrWrite
		r.FUA = cdb[1]&0x08 != 0
		r.DataOut = int(r.Blocks) * bs
	case OpWriteVerify10, OpWriteVerify12, OpWriteVerify16:
		if cdb[1]>>5 != 0 {
			return nil, bad
		}
		// Verifying "the medium" means the data is on it: write through.
		r.Kind, r.ByteCheck, r.FUA = KindWrite, (cdb[1]>>1)&1, true
		r.DataOut = int(r.Blocks) * bs
	case OpVerify10, OpVerify12, OpVerify16:
		if cdb[1]>>5 != 0 {
			return nil, bad
		}
		r.Kind, r.ByteCheck = KindVerify, (cdb[1]>>1)&3
		switch r.ByteCheck {
		case 0:
		case 1:
			r.DataOut = int(r.Blocks) * bs
		case 3:
			r.DataOut = bs
		default:
			return nil, bad
		}
	case OpPrefetch10, OpPrefetch16:
		r.Kind = KindPrefetch
	case OpSyncCache10, OpSyncCache16:
		r.Kind = KindSyncCache
	case OpWriteSame10, OpWriteSame16:
		if cdb[1]>>5 != 0 || cdb[1]&0x10 != 0 { // WRPROTECT, ANCHOR
			return nil, bad
		}
		r.Kind = KindWriteSame
		r.Unmap = cdb[1]&0x08 != 0
		r.NDOB = cdb[0] == OpWriteSame16 && cdb[1]&0x01 != 0
		if !r.NDOB {
			r.DataOut = bs
		}
	}
	return r, nil
}

// cdbLen returns the CDB length for a known opcode, 0 for unknown ones.
func cdbLen(op byte) int {
	switch op >> 5 {
	case 0:
		return 6
	case 1, 2:
		return 10
	case 4:
		return 16
	case 5:
		return 12
	}
	return 0
}
