package login

import (
	"strconv"
	"strings"
)

// Params are the negotiated operational parameters of a session, with the
// RFC 7143 defaults until negotiation changes them.
type Params struct {
	// HeaderDigest and DataDigest are true when CRC32C was negotiated.
	HeaderDigest, DataDigest bool
	// MaxRecvDataSegmentLength is what the initiator declared: the largest
	// data segment the target may send it.
	MaxRecvDataSegmentLength uint32
	// TargetMaxRecvDataSegmentLength is what the target declared.
	TargetMaxRecvDataSegmentLength uint32
	MaxBurstLength                 uint32
	FirstBurstLength               uint32
	InitialR2T                     bool
	ImmediateData                  bool
	MaxOutstandingR2T              uint32
	DataPDUInOrder                 bool
	DataSequenceInOrder            bool
	ErrorRecoveryLevel             uint32
	DefaultTime2Wait               uint32
	DefaultTime2Retain             uint32
	MaxConnections                 uint32
}

// Limits are what the target is willing to accept.
type Limits struct {
	MaxRecvDataSegmentLength uint32 // what the target declares (default 256 KiB)
	MaxBurstLength           uint32 // default 1 MiB
	FirstBurstLength         uint32 // default 256 KiB
	// RequireHeaderDigest and RequireDataDigest refuse None for the digest.
	RequireHeaderDigest, RequireDataDigest bool
}

func (l Limits) withDefaults() Limits {
	if l.MaxRecvDataSegmentLength == 0 {
		l.MaxRecvDataSegmentLength = 256 << 10
	}
	if l.MaxBurstLength == 0 {
		l.MaxBurstLength = 1 << 20
	}
	if l.FirstBurstLength == 0 {
		l.FirstBurstLength = 256 << 10
	}
	return l
}

// DefaultParams returns the RFC defaults.
func DefaultParams() Params {
	return Params{
		MaxRecvDataSegmentLength:       8192,
		TargetMaxRecvDataSegmentLength: 8192,
		MaxBurstLength:                 262144,
		FirstBurstLength:               65536,
		InitialR2T:                     true,
		ImmediateData:                  true,
		MaxOutstandingR2T:              1,
		DataPDUInOrder:                 true,
		DataSequenceInOrder:            true,
		DefaultTime2Wait:               2,
		DefaultTime2Retain:             20,
		MaxConnections:                 1,
	}
}

// negotiateKey applies one operational key and returns the response value,
// or "" when the key needs no answer. ok is false for keys that are not
// operational parameters.
func (p *Params) negotiateKey(lim Limits, k, v string) (resp string, ok bool) {
	num := func(lo, hi uint64) (uint32, bool) {
		n, err := strconv.ParseUint(v, 10, 32)
		if err != nil || n < lo || n > hi {
			return 0, false
		}
		return uint32(n), true
	}
	boolv := func() (bool, bool) {
		switch v {
		case "Yes":
			return true, true
		case "No":
			return false, true
		}
		return false, false
	}
	u := func(n uint32) string { return strconv.FormatUint(uint64(n), 10) }
	yn := func(b bool) string {
		if b {
			return "Yes"
		}
		return "No"
	}
	switch k {
	case "HeaderDigest", "DataDigest":
		// The first value of the initiator's list that we support wins.
		required := lim.RequireHeaderDigest
		if k == "DataDigest" {
			required = lim.RequireDataDigest
		}
		for _, c := range strings.Split(v, ",") {
			if (c == "None" && !required) || c == "CRC32C" {
				if k == "HeaderDigest" {
					p.HeaderDigest = c == "CRC32C"
				} else {
					p.DataDigest = c == "CRC32C"
				}
				return c, true
			}
		}
		return "Reject", true
	case "MaxRecvDataSegmentLength":
		n, good := num(512, 1<<24-1)
		if !good {
			return "Reject", true
		}
		p.MaxRecvDataSegmentLength = n
		return "", true
	case "MaxBurstLength":
		n, good := num(512, 1<<24-1)
		if !good {
			return "Reject", true
		}
		p.MaxBurstLength = min(n, lim.MaxBurstLength)
		return u(p.MaxBurstLength), true
	case "FirstBurstLength":
		n, good := num(512, 1<<24-1)
		if !good {
			return "Reject", true
		}
		p.FirstBurstLength = min(n, lim.FirstBurstLength)
		return u(p.FirstBurstLength), true
	case "InitialR2T":
		b, good := boolv()
		if !good {
			return "Reject", true
		}
		p.InitialR2T = b // OR with our No
		return yn(b), true
	case "ImmediateData":
		b, good := boolv()
		if !good {
			return "Reject", true
		}
		p.ImmediateData = b // AND with our Yes
		return yn(b), true
	case "MaxOutstandingR2T":
		if _, good := num(1, 65535); !good {
			return "Reject", true
		}
		p.MaxOutstandingR2T = 1
		return "1", true
	case "DataPDUInOrder", "DataSequenceInOrder":
		if _, good := boolv(); !good {
			return "Reject", true
		}
		// We only support in-order data (our Yes makes the OR Yes).
		p.DataPDUInOrder, p.DataSequenceInOrder = true, true
		return "Yes", true
	case "ErrorRecoveryLevel":
		if _, good := num(0, 2); !good {
			return "Reject", true
		}
		p.ErrorRecoveryLevel = 0
		return "0", true
	case "DefaultTime2Wait":
		n, good := num(0, 3600)
		if !good {
			return "Reject", true
		}
		p.DefaultTime2Wait = max(n, 2)
		return u(p.DefaultTime2Wait), true
	case "DefaultTime2Retain":
		if _, good := num(0, 3600); !good {
			return "Reject", true
		}
		p.DefaultTime2Retain = 0 // ERL 0: nothing to retain
		return "0", true
	case "MaxConnections":
		if _, good := num(1, 65535); !good {
			return "Reject", true
		}
		p.MaxConnections = 1
		return "1", true
	case "IFMarker", "OFMarker":
		return "No", true
	case "OFMarkInt", "IFMarkInt":
		return "Irrelevant", true
	case "iSCSIProtocolLevel":
		if _, good := num(0, 31); !good {
			return "Reject", true
		}
		return "1", true
	case "TaskReporting":
		return "RFC3720", true
	}
	return "", false
}
