package login

import (
	"strconv"
	"strings"
	"testing"
)

func kvmap(t *testing.T, b []byte) map[string]string {
	t.Helper()
	kvs, err := ParseText(b)
	if err != nil {
		t.Fatal(err)
	}
	m := map[string]string{}
	for _, kv := range kvs {
		m[kv.Key] = kv.Value
	}
	return m
}

func text(pairs ...string) []byte {
	var kvs []KV
	for i := 0; i+1 < len(pairs); i += 2 {
		kvs = append(kvs, KV{pairs[i], pairs[i+1]})
	}
	return EncodeText(kvs)
}

func machine(chap *CHAP, allowed func(string) bool) *Machine {
	return NewMachine(Config{Lookup: func(n string) (*Target, bool) {
		if n != "iqn.t" {
			return nil, false
		}
		return &Target{Name: n, PortalGroupTag: 1, CHAP: chap, Allowed: allowed}, true
	}})
}

func TestNoAuthLogin(t *testing.T) {
	m := machine(nil, nil)
	r := m.Step(Request{Transit: true, CSG: 0, NSG: 1, Data: text("InitiatorName", "iqn.i", "TargetName", "iqn.t", "SessionType", "Normal", "AuthMethod", "None")})
	if r.Status != 0 || !r.Transit || r.NSG != 1 {
		t.Fatalf("security stage: %+v", r)
	}
	if got := kvmap(t, r.Data); got["AuthMethod"] != "None" || got["TargetPortalGroupTag"] != "1" {
		t.Fatalf("keys %v", got)
	}
	r = m.Step(Request{Transit: true, CSG: 1, NSG: 3, Data: text("HeaderDigest", "CRC32C,None", "DataDigest", "None,CRC32C", "MaxBurstLength", "16776192", "ImmediateData", "Yes", "InitialR2T", "No", "MaxRecvDataSegmentLength", "65536", "X-foo", "1")})
	if r.Status != 0 || !r.Transit || !m.Done {
		t.Fatalf("operational stage: %+v", r)
	}
	got := kvmap(t, r.Data)
	if got["HeaderDigest"] != "CRC32C" || got["DataDigest"] != "None" || !m.Params.HeaderDigest || m.Params.DataDigest || got["X-foo"] != "NotUnderstood" || got["MaxBurstLength"] != "1048576" || got["MaxRecvDataSegmentLength"] == "" {
		t.Fatalf("keys %v", got)
	}
	if m.Params.MaxRecvDataSegmentLength != 65536 || m.Params.InitialR2T || !m.Params.ImmediateData || m.Params.MaxBurstLength != 1<<20 {
		t.Fatalf("params %+v", m.Params)
	}
}

func chapLogin(t *testing.T, creds *CHAP, user, secret string, mutual bool) Response {
	t.Helper()
	m := machine(creds, nil)
	r := m.Step(Request{CSG: 0, NSG: 1, Data: text("InitiatorName", "iqn.i", "TargetName", "iqn.t", "AuthMethod", "CHAP,None")})
	if r.Status != 0 {
		return r
	}
	if kvmap(t, r.Data)["AuthMethod"] != "CHAP" {
		t.Fatalf("AuthMethod answer %q", r.Data)
	}
	r = m.Step(Request{CSG: 0, NSG: 1, Data: text("CHAP_A", "7,5")})
	got := kvmap(t, r.Data)
	id, _ := strconv.Atoi(got["CHAP_I"])
	c, err := DecodeBinary(got["CHAP_C"])
	if err != nil || r.Status != 0 {
		t.Fatalf("challenge %v %+v", err, r)
	}
	pairs := []string{"CHAP_N", user, "CHAP_R", EncodeHex(ChapResponse(byte(id), secret, c))}
	myC := []byte("initiator-challenge")
	if mutual {
		pairs = append(pairs, "CHAP_I", "7", "CHAP_C", EncodeHex(myC))
	}
	r = m.Step(Request{Transit: true, CSG: 0, NSG: 1, Data: text(pairs...)})
	if r.Status == 0 && mutual {
		got := kvmap(t, r.Data)
		want := EncodeHex(ChapResponse(7, creds.MutualSecret, myC))
		if got["CHAP_N"] != creds.MutualUsername || got["CHAP_R"] != want {
			t.Fatalf("mutual answer %v", got)
		}
	}
	if r.Status == 0 && !r.Transit {
		t.Fatal("no transit after successful CHAP")
	}
	return r
}

func TestCHAP(t *testing.T) {
	oneWay := &CHAP{Username: "user", Secret: "secret-secret-1"}
	mutual := &CHAP{Username: "user", Secret: "secret-secret-1", MutualUsername: "tgt", MutualSecret: "target-secret-2"}
	if r := chapLogin(t, oneWay, "user", "secret-secret-1", false); r.Status != 0 {
		t.Fatalf("one-way: %+v", r)
	}
	if r := chapLogin(t, mutual, "user", "secret-secret-1", true); r.Status != 0 {
		t.Fatalf("mutual: %+v", r)
	}
	if r := chapLogin(t, oneWay, "user", "wrong-secret-xx", false); r.Status != StatusAuthFailed {
		t.Fatalf("wrong secret: %+v", r)
	}
	if strings.Contains(chapLogin(t, oneWay, "user", "wrong-secret-xx", false).Reason, "secret-secret-1") {
		t.Fatal("secret in failure reason")
	}
	if r := chapLogin(t, oneWay, "other", "secret-secret-1", false); r.Status != StatusAuthFailed {
		t.Fatalf("wrong user: %+v", r)
	}
	if r := chapLogin(t, oneWay, "user", "secret-secret-1", true); r.Status != StatusAuthFailed {
		t.Fatalf("mutual without target secret: %+v", r)
	}
	// Skipping the security stage on a CHAP target is refused.
	m := machine(oneWay, nil)
	r := m.Step(Request{Transit: true, CSG: 1, NSG: 3, Data: text("InitiatorName", "iqn.i", "TargetName", "iqn.t")})
	if r.Status != StatusAuthFailed {
		t.Fatalf("skip security: %+v", r)
	}
	// Offering only None to a CHAP target is refused.
	m = machine(oneWay, nil)
	r = m.Step(Request{Transit: true, CSG: 0, NSG: 1, Data: text("InitiatorName", "iqn.i", "TargetName", "iqn.t", "AuthMethod", "None")})
	if r.Status != StatusAuthFailed {
		t.Fatalf("None on CHAP target: %+v", r)
	}
	if (&CHAP{Username: "u", Secret: "short"}).Validate() == nil {
		t.Fatal("short secret accepted")
	}
}

func TestACLAndLookup(t *testing.T) {
	m := machine(nil, func(n string) bool { return n == "iqn.good" })
	r := m.Step(Request{Transit: true, CSG: 0, NSG: 1, Data: text("InitiatorName", "iqn.bad", "TargetName", "iqn.t")})
	if r.Status != StatusAuthzFailed {
		t.Fatalf("ACL: %+v", r)
	}
	m = machine(nil, nil)
	r = m.Step(Request{Transit: true, CSG: 0, NSG: 1, Data: text("InitiatorName", "iqn.i", "TargetName", "iqn.nope")})
	if r.Status != StatusNotFound {
		t.Fatalf("lookup: %+v", r)
	}
	m = machine(nil, nil)
	r = m.Step(Request{Transit: true, CSG: 0, NSG: 3, Data: text("InitiatorName", "iqn.i", "SessionType", "Discovery")})
	if r.Status != 0 || !m.Done || !m.Discovery {
		t.Fatalf("discovery: %+v", r)
	}
}

func TestParseTextErrors(t *testing.T) {
	for _, in := range []string{"novalue\x00", "=x\x00", "a=1\x00a=2\x00"} {
		if _, err := ParseText([]byte(in)); err == nil {
			t.Errorf("%q parsed", in)
		}
	}
	kvs, err := ParseText([]byte("a=1\x00b=\x00"))
	if err != nil || len(kvs) != 2 || kvs[1].Value != "" {
		t.Fatalf("%v %v", kvs, err)
	}
}

func FuzzParseText(f *testing.F) {
	f.Add([]byte("InitiatorName=iqn.x\x00SessionType=Discovery\x00"))
	f.Add([]byte("a=b=c\x00\x00"))
	f.Fuzz(func(t *testing.T, b []byte) {
		kvs, err := ParseText(b)
		if err != nil {
			return
		}
		again, err := ParseText(EncodeText(kvs))
		if err != nil || len(again) != len(kvs) {
			t.Fatalf("re-parse: %v %d/%d", err, len(again), len(kvs))
		}
	})
}

// FuzzLogin drives the login machine with arbitrary request sequences; it
// must never panic, and never reach full feature phase on a CHAP target
// without a valid response (which the fuzzer cannot forge).
func FuzzLogin(f *testing.F) {
	f.Add([]byte{0x81}, text("InitiatorName", "iqn.i", "TargetName", "iqn.t", "AuthMethod", "CHAP"), []byte{0x81}, text("CHAP_A", "5"), []byte{0x87}, text("CHAP_N", "user", "CHAP_R", "0x00"))
	f.Add([]byte{0x87}, text("InitiatorName", "iqn.i", "SessionType", "Discovery"), []byte{0}, []byte{}, []byte{0}, []byte{})
	f.Fuzz(func(t *testing.T, h1, d1, h2, d2, h3, d3 []byte) {
		for _, withCHAP := range []bool{false, true} {
			var creds *CHAP
			if withCHAP {
				creds = &CHAP{Username: "user", Secret: "secret-secret-1"}
			}
			m := machine(creds, nil)
			for _, step := range [][2][]byte{{h1, d1}, {h2, d2}, {h3, d3}} {
				var h byte
				if len(step[0]) > 0 {
					h = step[0][0]
				}
				r := m.Step(Request{Transit: h&0x80 != 0, Continue: h&0x40 != 0, CSG: (h >> 2) & 3, NSG: h & 3, Data: step[1]})
				if r.Status != 0 {
					break
				}
			}
			if withCHAP && m.Done && !m.Discovery {
				t.Fatal("reached full feature phase on a CHAP target without authenticating")
			}
		}
	})
}
