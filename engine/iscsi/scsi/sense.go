// Package scsi parses SCSI command descriptor blocks and executes the SBC
// disk command set against a blockdev.Device, returning a status and sense
// data. It knows nothing of iSCSI; the transport moves the bytes.
package scsi

import (
	"context"
	"errors"

	"github.com/lockstep-io/lockstep/engine/blockdev"
)

// SCSI status codes.
const (
	StatusGood           = 0x00
	StatusCheckCondition = 0x02
	StatusBusy           = 0x08
	StatusTaskAborted    = 0x40
)

// Sense keys.
const (
	KeyNoSense        = 0x00
	KeyNotReady       = 0x02
	KeyMediumError    = 0x03
	KeyHardwareError  = 0x04
	KeyIllegalRequest = 0x05
	KeyUnitAttention  = 0x06
	KeyDataProtect    = 0x07
	KeyCopyAborted    = 0x0a
	KeyAbortedCommand = 0x0b
	KeyMiscompare     = 0x0e
)

// Sense is a sense key with its additional sense code and qualifier.
type Sense struct {
	Key, ASC, ASCQ byte
	// Info, when InfoValid, goes into the INFORMATION field.
	Info      uint32
	InfoValid bool
}

// Common sense conditions.
var (
	SenseInvalidOpcode     = Sense{Key: KeyIllegalRequest, ASC: 0x20}
	SenseInvalidFieldCDB   = Sense{Key: KeyIllegalRequest, ASC: 0x24}
	SenseInvalidFieldParam = Sense{Key: KeyIllegalRequest, ASC: 0x26}
	SenseParamListLength   = Sense{Key: KeyIllegalRequest, ASC: 0x1a}
	SenseLBAOutOfRange     = Sense{Key: KeyIllegalRequest, ASC: 0x21}
	SenseLUNotSupported    = Sense{Key: KeyIllegalRequest, ASC: 0x25}
	SenseSavingNotSupp     = Sense{Key: KeyIllegalRequest, ASC: 0x39}
	SenseWriteProtected    = Sense{Key: KeyDataProtect, ASC: 0x27}
	SenseNotReady          = Sense{Key: KeyNotReady, ASC: 0x04, ASCQ: 0x01}
	SenseReadError         = Sense{Key: KeyMediumError, ASC: 0x11}
	SenseWriteError        = Sense{Key: KeyMediumError, ASC: 0x0c}
	SenseInternalError     = Sense{Key: KeyHardwareError, ASC: 0x44}
	SenseMiscompare        = Sense{Key: KeyMiscompare, ASC: 0x1d}
	SenseAborted           = Sense{Key: KeyAbortedCommand}
	SenseDataPhase         = Sense{Key: KeyAbortedCommand, ASC: 0x4b}
)

// Fixed returns the sense in fixed format (18 bytes).
func (s Sense) Fixed() []byte {
	b := make([]byte, 18)
	b[0] = 0x70
	if s.InfoValid {
		b[0] |= 0x80
		b[3], b[4], b[5], b[6] = byte(s.Info>>24), byte(s.Info>>16), byte(s.Info>>8), byte(s.Info)
	}
	b[2] = s.Key
	b[7] = 10
	b[12] = s.ASC
	b[13] = s.ASCQ
	return b
}

// Descriptor returns the sense in descriptor format (without descriptors).
func (s Sense) Descriptor() []byte {
	return []byte{0x72, s.Key, s.ASC, s.ASCQ, 0, 0, 0, 0}
}

// Result is the outcome of a command.
type Result struct {
	Status byte
	Sense  *Sense
	// Data is the data-in payload (already limited by the allocation length).
	Data []byte
}

// Check returns a CHECK CONDITION result.
func Check(s Sense) Result { return Result{Status: StatusCheckCondition, Sense: &s} }

// refusal is Check for functions that return a *Result, nil when the
// command may go on.
func refusal(s Sense) *Result {
	r := Check(s)
	return &r
}

func good(data []byte) Result { return Result{Status: StatusGood, Data: data} }

// deviceError maps a blockdev error to sense data.
func deviceError(ctx context.Context, err error, write bool) Result {
	switch {
	case errors.Is(err, blockdev.ErrOutOfRange):
		return Check(SenseLBAOutOfRange)
	case errors.Is(err, blockdev.ErrReadOnly):
		return Check(SenseWriteProtected)
	case errors.Is(err, blockdev.ErrFenced), errors.Is(err, blockdev.ErrClosed):
		return Check(SenseNotReady)
	case errors.Is(err, blockdev.ErrUnaligned):
		return Check(SenseInvalidFieldCDB)
	case ctx.Err() != nil:
		return Check(SenseAborted)
	case write:
		return Check(SenseWriteError)
	}
	return Check(SenseReadError)
}
