package pdu

import (
	"bytes"
	"errors"
	"testing"
)

func TestRoundTrip(t *testing.T) {
	p := &PDU{Data: []byte("hello")}
	p.SetOpcode(OpSCSICmd, true)
	p.BHS[1] = 0x80
	p.SetITT(0x01020304)
	p.SetLUN(1 << 48)
	p.PutU32(OffCmdSN, 77)
	wire := p.Encode()
	if len(wire) != BHSLen+8 {
		t.Fatalf("wire length %d, want %d (padded)", len(wire), BHSLen+8)
	}
	q, err := Read(bytes.NewReader(wire), 8192)
	if err != nil {
		t.Fatal(err)
	}
	if q.Opcode() != OpSCSICmd || !q.Immediate() || !q.Final() || q.ITT() != 0x01020304 ||
		q.LUN() != 1<<48 || q.U32(OffCmdSN) != 77 || string(q.Data) != "hello" {
		t.Fatalf("decoded %+v", q)
	}
	var buf bytes.Buffer
	if _, err := q.WriteTo(&buf); err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(buf.Bytes(), wire) {
		t.Fatal("WriteTo differs from Encode")
	}
}

func TestTooLargeRefusedBeforeAllocation(t *testing.T) {
	p := &PDU{}
	p.BHS[5], p.BHS[6], p.BHS[7] = 0xff, 0xff, 0xff
	_, err := Read(bytes.NewReader(p.BHS[:]), 8192)
	if !errors.Is(err, ErrTooLarge) {
		t.Fatalf("err = %v, want ErrTooLarge", err)
	}
}

func TestTruncated(t *testing.T) {
	p := &PDU{Data: make([]byte, 100)}
	wire := p.Encode()
	if _, err := Read(bytes.NewReader(wire[:80]), 8192); err == nil {
		t.Fatal("truncated PDU decoded")
	}
	if _, _, err := Decode(wire[:20], 8192); !errors.Is(err, ErrMalformed) {
		t.Fatalf("short header: %v", err)
	}
}

func TestExtendedCDB(t *testing.T) {
	p := &PDU{}
	for i := 32; i < 48; i++ {
		p.BHS[i] = byte(i)
	}
	// AHS type 1, length 1 (reserved byte) + 16 CDB bytes = 17, padded to 20.
	ahs := make([]byte, 20)
	ahs[1] = 17
	ahs[2] = 1
	for i := 4; i < 20; i++ {
		ahs[i] = 0xa0 + byte(i)
	}
	p.AHS = ahs
	cdb := p.CDB()
	if len(cdb) != 32 || cdb[0] != 32 || cdb[16] != 0xa4 {
		t.Fatalf("extended CDB %x", cdb)
	}
}

func FuzzDecode(f *testing.F) {
	p := &PDU{Data: []byte("key=value\x00")}
	p.SetOpcode(OpLoginReq, true)
	f.Add(p.Encode())
	q := &PDU{AHS: []byte{0, 5, 1, 0, 1, 2, 3, 4}}
	q.SetOpcode(OpSCSICmd, false)
	f.Add(q.Encode())
	f.Add(make([]byte, 47))
	f.Fuzz(func(t *testing.T, b []byte) {
		for _, d := range []Digests{{Header: true}, {Header: true, Data: true}} {
			if p, err := ReadDigests(bytes.NewReader(b), 65536, d); err == nil {
				var out bytes.Buffer
				if _, err := p.WriteDigests(&out, d); err != nil {
					t.Fatal(err)
				}
				if _, err := ReadDigests(&out, 65536, d); err != nil {
					t.Fatalf("digest round trip: %v", err)
				}
			}
		}
		p, n, err := Decode(b, 65536)
		if err != nil {
			return
		}
		if n > len(b) || p.DataSegmentLength() != len(p.Data) {
			t.Fatalf("consumed %d of %d, data %d/%d", n, len(b), len(p.Data), p.DataSegmentLength())
		}
		_ = p.CDB()
		re := p.Encode()
		p2, _, err := Decode(re, 65536)
		if err != nil {
			t.Fatalf("re-decode: %v", err)
		}
		if p2.BHS != p.BHS || !bytes.Equal(p2.Data, p.Data) || !bytes.Equal(p2.AHS, p.AHS) {
			t.Fatal("re-encoding changed the PDU")
		}
	})
}

func TestCRC32CVector(t *testing.T) {
	// RFC 7143 appendix B.4 (same as RFC 3720): 32 bytes of zeros.
	if got := crc(make([]byte, 32)); got != [4]byte{0xaa, 0x36, 0x91, 0x8a} {
		t.Fatalf("crc of 32 zero bytes = % x", got)
	}
	ff := bytes.Repeat([]byte{0xff}, 32)
	if got := crc(ff); got != [4]byte{0x43, 0xab, 0xa8, 0x62} {
		t.Fatalf("crc of 32 0xff bytes = % x", got)
	}
}

func TestDigestsRoundTripAndCorruption(t *testing.T) {
	d := Digests{Header: true, Data: true}
	p := &PDU{Data: []byte("odd-length")}
	p.SetOpcode(OpDataOut, false)
	p.SetITT(9)
	var buf bytes.Buffer
	if _, err := p.WriteDigests(&buf, d); err != nil {
		t.Fatal(err)
	}
	wire := buf.Bytes()
	if len(wire) != BHSLen+4+12+4 {
		t.Fatalf("wire length %d", len(wire))
	}
	q, err := ReadDigests(bytes.NewReader(wire), 8192, d)
	if err != nil || string(q.Data) != "odd-length" || q.ITT() != 9 {
		t.Fatalf("read back %v %+v", err, q)
	}
	for _, at := range []int{3, BHSLen + 1, BHSLen + 6, len(wire) - 1} {
		bad := append([]byte(nil), wire...)
		bad[at] ^= 0x40
		if _, err := ReadDigests(bytes.NewReader(bad), 8192, d); !errors.Is(err, ErrDigest) {
			t.Errorf("corruption at byte %d: %v", at, err)
		}
	}
}
