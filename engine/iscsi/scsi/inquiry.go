package scsi

import (
	"encoding/binary"
	"sort"
)

const (
	vendorID   = "LOCKSTEP"
	productID  = "VOLUME          "
	productRev = "0001"
)

func (d *Disk) inquiry(req *Request) Result {
	cdb := req.CDB
	if cdb[1]&0x01 == 0 {
		b := make([]byte, 96)
		b[0] = 0x00 // direct access block device, connected
		b[2] = 0x06 // SPC-4
		b[3] = 0x12 // HISUP, response data format 2
		b[4] = byte(len(b) - 5)
		b[5] = 0x08 // 3PC: EXTENDED COPY
		b[7] = 0x02 // CMDQUE
		copy(b[8:], vendorID)
		copy(b[16:], productID)
		copy(b[32:], productRev)
		// Version descriptors: SAM-5, iSCSI, SPC-4, SBC-3.
		for i, v := range []uint16{0x00a0, 0x0960, 0x0460, 0x04c0} {
			binary.BigEndian.PutUint16(b[58+2*i:], v)
		}
		return good(clip(b, req.AllocLen))
	}
	var page []byte
	switch cdb[2] {
	case 0x00:
		page = []byte{0x00, 0x80, 0x83, 0xb0, 0xb1, 0xb2}
	case 0x80:
		page = []byte(d.serial)
	case 0x83:
		naa := append([]byte{0x01, 0x03, 0x00, 16}, d.naa[:]...)
		t10 := append([]byte{0x02, 0x01, 0x00, byte(8 + len(d.serial))}, vendorID+d.serial...)
		page = append(naa, t10...)
	case 0xb0:
		page = make([]byte, 0x3c)
		page[0] = 0x01 // WSNZ
		page[1] = maxCAWBlocks
		binary.BigEndian.PutUint32(page[4:], uint32(maxTransferBytes/d.bs))
		binary.BigEndian.PutUint32(page[16:], maxUnmapBlocks)
		binary.BigEndian.PutUint32(page[20:], maxUnmapDescs)
		// OPTIMAL UNMAP GRANULARITY stays 0, "not reported": any block can
		// be unmapped alone. Reporting 1 block made qemu (7.2, and later
		// releases with the same code) infer a 4 KiB cluster on 4096-byte
		// LUNs and abort the whole VM on its first read of 32 KiB or more
		// (an unaligned GET LBA STATUS length asserts in
		// iscsi_co_block_status).
		binary.BigEndian.PutUint64(page[32:], uint64(maxWriteSameBytes/d.bs))
		// MAXIMUM ATOMIC TRANSFER LENGTH; alignment, granularity and
		// atomic boundaries stay 0: any block range up to it is atomic.
		binary.BigEndian.PutUint32(page[40:], uint32(d.atomicMax/d.bs))
	case 0xb1:
		page = make([]byte, 0x3c)
		page[1] = 0x01 // non-rotating medium
	case 0xb2:
		page = make([]byte, 4)
		page[1] = 0x80 | 0x40 | 0x20 | 0x04 // LBPU, LBPWS, LBPWS10, LBPRZ
		page[2] = 0x02                      // thin provisioned
	default:
		return Check(SenseInvalidFieldCDB)
	}
	b := make([]byte, 4, 4+len(page))
	b[1] = cdb[2]
	binary.BigEndian.PutUint16(b[2:], uint16(len(page)))
	return good(clip(append(b, page...), req.AllocLen))
}

func (d *Disk) modeSense(req *Request) Result {
	cdb := req.CDB
	ten := cdb[0] == OpModeSense10
	dbd := cdb[1]&0x08 != 0
	llbaa := ten && cdb[1]&0x10 != 0
	pc := cdb[2] >> 6
	code, sub := cdb[2]&0x3f, cdb[3]
	if pc == 3 {
		return Check(SenseSavingNotSupp)
	}
	if sub != 0 && !(code == 0x3f && sub == 0xff) {
		return Check(SenseInvalidFieldCDB)
	}
	caching := func() []byte {
		p := make([]byte, 20)
		p[0], p[1] = 0x08, 0x12
		if pc != 1 {
			p[2] = 0x04 // WCE: the device has a volatile cache
		}
		return p
	}
	control := func() []byte {
		p := make([]byte, 12)
		p[0], p[1] = 0x0a, 0x0a
		return p
	}
	var pages []byte
	switch code {
	case 0x08:
		pages = caching()
	case 0x0a:
		pages = control()
	case 0x3f:
		pages = append(caching(), control()...)
	default:
		return Check(SenseInvalidFieldCDB)
	}
	var bd []byte
	if !dbd {
		nb := d.blocks()
		if llbaa {
			bd = make([]byte, 16)
			binary.BigEndian.PutUint64(bd, nb)
			binary.BigEndian.PutUint32(bd[12:], uint32(d.bs))
		} else {
			bd = make([]byte, 8)
			binary.BigEndian.PutUint32(bd, uint32(min(nb, 0xffffffff)))
			if !ten {
				bd[0] = 0 // density code; block count is 24 bits in MODE SENSE(6)
				binary.BigEndian.PutUint32(bd, uint32(min(nb, 0xffffff)))
			}
			binary.BigEndian.PutUint32(bd[4:], uint32(d.bs)&0xffffff)
		}
	}
	devSpecific := byte(0x10) // DPOFUA
	if d.dev.ReadOnly() {
		devSpecific |= 0x80
	}
	var b []byte
	if ten {
		b = make([]byte, 8)
		b[3] = devSpecific
		if llbaa {
			b[4] = 0x01
		}
		binary.BigEndian.PutUint16(b[6:], uint16(len(bd)))
		b = append(append(b, bd...), pages...)
		binary.BigEndian.PutUint16(b[0:], uint16(len(b)-2))
	} else {
		b = make([]byte, 4)
		b[2] = devSpecific
		b[3] = byte(len(bd))
		b = append(append(b, bd...), pages...)
		b[0] = byte(len(b) - 1)
	}
	return good(clip(b, req.AllocLen))
}

// opInfo describes one supported command for REPORT SUPPORTED OPERATION
// CODES: its service action (if any) and the CDB usage mask.
type opInfo struct {
	op    byte
	sa    uint16
	hasSA bool
	usage []byte
}

var supportedOps = []opInfo{
	{op: OpTestUnitReady, usage: []byte{0x00, 0, 0, 0, 0, 0x07}},
	{op: OpRequestSense, usage: []byte{0x03, 0x01, 0, 0, 0xff, 0x07}},
	{op: OpRead6, usage: []byte{0x08, 0x1f, 0xff, 0xff, 0xff, 0x07}},
	{op: OpWrite6, usage: []byte{0x0a, 0x1f, 0xff, 0xff, 0xff, 0x07}},
	{op: OpReserve6, usage: []byte{0x16, 0, 0, 0, 0, 0x07}},
	{op: OpRelease6, usage: []byte{0x17, 0, 0, 0, 0, 0x07}},
	{op: OpInquiry, usage: []byte{0x12, 0x01, 0xff, 0xff, 0xff, 0x07}},
	{op: OpModeSense6, usage: []byte{0x1a, 0x08, 0xff, 0xff, 0xff, 0x07}},
	{op: OpStartStopUnit, usage: []byte{0x1b, 0x01, 0, 0x0f, 0xf7, 0x07}},
	{op: OpPreventAllow, usage: []byte{0x1e, 0, 0, 0, 0x03, 0x07}},
	{op: OpReadCapacity10, usage: []byte{0x25, 0, 0xff, 0xff, 0xff, 0xff, 0, 0, 0x01, 0x07}},
	{op: OpRead10, usage: []byte{0x28, 0x18, 0xff, 0xff, 0xff, 0xff, 0x1f, 0xff, 0xff, 0x07}},
	{op: OpWrite10, usage: []byte{0x2a, 0x18, 0xff, 0xff, 0xff, 0xff, 0x1f, 0xff, 0xff, 0x07}},
	{op: OpWriteVerify10, usage: []byte{0x2e, 0x12, 0xff, 0xff, 0xff, 0xff, 0x1f, 0xff, 0xff, 0x07}},
	{op: OpVerify10, usage: []byte{0x2f, 0x16, 0xff, 0xff, 0xff, 0xff, 0x1f, 0xff, 0xff, 0x07}},
	{op: OpPrefetch10, usage: []byte{0x34, 0x02, 0xff, 0xff, 0xff, 0xff, 0x1f, 0xff, 0xff, 0x07}},
	{op: OpSyncCache10, usage: []byte{0x35, 0x06, 0xff, 0xff, 0xff, 0xff, 0x1f, 0xff, 0xff, 0x07}},
	{op: OpWriteSame10, usage: []byte{0x41, 0x08, 0xff, 0xff, 0xff, 0xff, 0x1f, 0xff, 0xff, 0x07}},
	{op: OpUnmap, usage: []byte{0x42, 0, 0, 0, 0, 0, 0x1f, 0xff, 0xff, 0x07}},
	{op: OpReadDefectData10, usage: []byte{0x37, 0, 0x1f, 0, 0, 0, 0, 0xff, 0xff, 0x07}},
	{op: OpReserve10, usage: []byte{0x56, 0, 0, 0, 0, 0, 0, 0, 0, 0x07}},
	{op: OpRelease10, usage: []byte{0x57, 0, 0, 0, 0, 0, 0, 0, 0, 0x07}},
	{op: OpModeSense10, usage: []byte{0x5a, 0x18, 0xff, 0xff, 0, 0, 0, 0xff, 0xff, 0x07}},
	{op: OpRead16, usage: []byte{0x88, 0x18, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x1f, 0x07}},
	{op: OpCompareAndWrite, usage: []byte{0x89, 0x18, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0, 0, 0, 0xff, 0x1f, 0x07}},
	{op: OpWrite16, usage: []byte{0x8a, 0x18, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x1f, 0x07}},
	{op: OpOrWrite16, usage: []byte{0x8b, 0x18, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x1f, 0x07}},
	{op: OpWriteVerify16, usage: []byte{0x8e, 0x12, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x1f, 0x07}},
	{op: OpVerify16, usage: []byte{0x8f, 0x16, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x1f, 0x07}},
	{op: OpPrefetch16, usage: []byte{0x90, 0x02, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x1f, 0x07}},
	{op: OpSyncCache16, usage: []byte{0x91, 0x06, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x1f, 0x07}},
	{op: OpWriteSame16, usage: []byte{0x93, 0x09, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x1f, 0x07}},
	{op: OpWriteAtomic16, usage: []byte{0x9c, 0x18, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0, 0, 0xff, 0xff, 0x1f, 0x07}},
	{op: OpServiceActionIn16, sa: SAReadCapacity16, hasSA: true, usage: []byte{0x9e, 0x10, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff, 0xff, 0xff, 0, 0x07}},
	{op: OpServiceActionIn16, sa: SAGetLBAStatus, hasSA: true, usage: []byte{0x9e, 0x12, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0, 0x07}},
	{op: OpExtendedCopy, sa: 0x00, hasSA: true, usage: []byte{0x83, 0x00, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff, 0xff, 0xff, 0, 0x07}},
	{op: OpReceiveCopyResults, sa: saCopyStatus, hasSA: true, usage: []byte{0x84, saCopyStatus, 0xff, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff, 0xff, 0xff, 0, 0x07}},
	{op: OpReceiveCopyResults, sa: saOperatingParams, hasSA: true, usage: []byte{0x84, saOperatingParams, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff, 0xff, 0xff, 0, 0x07}},
	{op: OpReportLUNs, usage: []byte{0xa0, 0, 0xff, 0, 0, 0, 0xff, 0xff, 0xff, 0xff, 0, 0x07}},
	{op: OpMaintenanceIn, sa: SAReportSupportedOps, hasSA: true, usage: []byte{0xa3, 0x0c, 0x87, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0, 0x07}},
	{op: OpRead12, usage: []byte{0xa8, 0x18, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x1f, 0x07}},
	{op: OpWrite12, usage: []byte{0xaa, 0x18, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x1f, 0x07}},
	{op: OpWriteVerify12, usage: []byte{0xae, 0x12, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x1f, 0x07}},
	{op: OpVerify12, usage: []byte{0xaf, 0x16, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x1f, 0x07}},
	{op: OpReadDefectData12, usage: []byte{0xb7, 0x1f, 0, 0, 0, 0, 0xff, 0xff, 0xff, 0xff, 0, 0x07}},
}

func init() {
	sort.Slice(supportedOps, func(i, j int) bool {
		if supportedOps[i].op != supportedOps[j].op {
			return supportedOps[i].op < supportedOps[j].op
		}
		return supportedOps[i].sa < supportedOps[j].sa
	})
	for _, o := range supportedOps {
		if o.op != OpWriteAtomic16 {
			opsWithoutAtomic = append(opsWithoutAtomic, o)
		}
	}
}

// opsWithoutAtomic is supportedOps less WRITE ATOMIC (16).
var opsWithoutAtomic []opInfo

// timeoutsDescriptor is a command timeouts descriptor with no timeouts.
var timeoutsDescriptor = []byte{0x00, 0x0a, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0}

// reportOpcodes answers REPORT SUPPORTED OPERATION CODES; WRITE ATOMIC is
// listed only on a device that keeps writes whole.
func reportOpcodes(req *Request, atomic bool) Result {
	ops := supportedOps
	if !atomic {
		ops = opsWithoutAtomic
	}
	cdb := req.CDB
	rctd := cdb[2]&0x80 != 0
	opts := cdb[2] & 0x07
	reqOp := cdb[3]
	reqSA := binary.BigEndian.Uint16(cdb[4:6])
	if opts == 0 {
		var b []byte
		b = append(b, 0, 0, 0, 0)
		for _, o := range ops {
			desc := make([]byte, 8)
			desc[0] = o.op
			binary.BigEndian.PutUint16(desc[2:], o.sa)
			if o.hasSA {
				desc[5] |= 0x01
			}
			binary.BigEndian.PutUint16(desc[6:], uint16(len(o.usage)))
			if rctd {
				desc[5] |= 0x02
				desc = append(desc, timeoutsDescriptor...)
			}
			b = append(b, desc...)
		}
		binary.BigEndian.PutUint32(b, uint32(len(b)-4))
		return good(clip(b, req.AllocLen))
	}
	var found *opInfo
	hasSAop := false
	for i := range ops {
		o := &ops[i]
		if o.op != reqOp {
			continue
		}
		hasSAop = o.hasSA
		if !o.hasSA || o.sa == reqSA {
			found = o
			break
		}
	}
	switch opts {
	case 1:
		if hasSAop {
			return Check(SenseInvalidFieldCDB)
		}
	case 2:
		if found != nil && !found.hasSA || (found == nil && !hasSAop && opInTable(ops, reqOp)) {
			return Check(SenseInvalidFieldCDB)
		}
	}
	b := make([]byte, 4)
	if found == nil {
		b[1] = 0x01 // not supported
	} else {
		b[1] = 0x03 // supported per standard
		binary.BigEndian.PutUint16(b[2:], uint16(len(found.usage)))
		b = append(b, found.usage...)
	}
	if rctd {
		b[1] |= 0x80
		b = append(b, timeoutsDescriptor...)
	}
	return good(clip(b, req.AllocLen))
}

func opInTable(ops []opInfo, op byte) bool {
	for _, o := range ops {
		if o.op == op {
			return true
		}
	}
	return false
}

// EncodeLUN returns the SAM LUN field for lun (peripheral or flat addressing).
func EncodeLUN(lun uint64) uint64 {
	if lun < 256 {
		return lun << 48
	}
	return (0x4000 | lun&0x3fff) << 48
}

// DecodeLUN reverses EncodeLUN; ok is false for other addressing methods.
func DecodeLUN(field uint64) (uint64, bool) {
	hi := field >> 48
	if field&0xffffffffffff != 0 {
		return 0, false
	}
	switch hi >> 14 {
	case 0:
		if hi>>8 != 0 {
			return 0, false
		}
		return hi & 0xff, true
	case 1:
		return hi & 0x3fff, true
	}
	return 0, false
}

// ReportLUNs builds the REPORT LUNS response for the given LUN numbers.
func ReportLUNs(req *Request, luns []uint64) Result {
	b := make([]byte, 8, 8+8*len(luns))
	for _, l := range luns {
		b = binary.BigEndian.AppendUint64(b, EncodeLUN(l))
	}
	binary.BigEndian.PutUint32(b, uint32(8*len(luns)))
	return good(clip(b, req.AllocLen))
}

// UnknownLUN answers a command addressed to a LUN that does not exist:
// INQUIRY reports "no device", REQUEST SENSE reports the condition, and
// everything else fails with LOGICAL UNIT NOT SUPPORTED.
func UnknownLUN(req *Request) Result {
	switch req.Kind {
	case KindInquiry:
		if req.CDB[1]&0x01 != 0 {
			return Check(SenseLUNotSupported)
		}
		b := make([]byte, 36)
		b[0] = 0x7f
		b[2], b[3], b[4] = 0x06, 0x12, 31
		copy(b[8:], vendorID)
		copy(b[16:], productID)
		return good(clip(b, req.AllocLen))
	case KindRequestSense:
		return good(clip(SenseLUNotSupported.Fixed(), req.AllocLen))
	}
	return Check(SenseLUNotSupported)
}
