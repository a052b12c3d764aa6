package login

import (
	"fmt"
	"slices"
	"strconv"
	"strings"
)

// Login stages (CSG/NSG values).
const (
	StageSecurity    = 0
	StageOperational = 1
	StageFullFeature = 3
)

// Login status class and detail (RFC 7143 section 11.13.5), as one value
// class<<8 | detail.
const (
	StatusSuccess         = 0x0000
	StatusInitiatorError  = 0x0200
	StatusAuthFailed      = 0x0201
	StatusAuthzFailed     = 0x0202
	StatusNotFound        = 0x0203
	StatusTargetRemoved   = 0x0204
	StatusBadVersion      = 0x0205
	StatusTooManyConns    = 0x0206
	StatusMissingParam    = 0x0207
	StatusCantInclude     = 0x0208
	StatusBadSessionType  = 0x0209
	StatusNoSession       = 0x020a
	StatusInvalidDuring   = 0x020b
	StatusTargetError     = 0x0300
	StatusServiceUnavail  = 0x0301
	StatusOutOfResources  = 0x0302
	maxLoginText          = 64 << 10
	maxLoginExchanges     = 64
	chapChallengeLen      = 16
	maxInitiatorChallenge = 1024
)

// Target describes what the machine needs to know about a target.
type Target struct {
	Name           string
	Alias          string
	PortalGroupTag uint16
	// CHAP, when non-nil, is required for every login to the target.
	CHAP *CHAP
	// Allowed reports whether an initiator name may log in; nil allows all.
	Allowed func(initiator string) bool
}

// Config configures a Machine.
type Config struct {
	Limits Limits
	// Lookup resolves a TargetName for normal sessions.
	Lookup func(name string) (*Target, bool)
}

// Request is the part of a Login Request PDU the machine needs.
type Request struct {
	Transit, Continue bool
	CSG, NSG          byte
	VersionMin        byte
	Data              []byte
}

// Response is the part of a Login Response PDU the machine decides.
type Response struct {
	Transit  bool
	CSG, NSG byte
	Data     []byte
	// Status is class<<8|detail; non-zero ends the login.
	Status uint16
	// Reason explains a failure for the log (never contains secrets).
	Reason string
}

// Machine runs the login exchange of one connection.
type Machine struct {
	cfg Config

	Params        Params
	Discovery     bool
	InitiatorName string
	Alias         string
	TargetName    string
	Target        *Target
	// Done is set once the target agreed to enter full feature phase.
	Done bool

	started      bool
	stage        byte
	nextStage    byte
	transitOK    bool
	failed       bool
	authDone     bool
	chapState    int
	chapID       byte
	chapC        []byte
	declared     bool
	pending      []byte
	exchanges    int
	sessionKnown bool
}

// NewMachine returns a machine for one connection's login.
func NewMachine(cfg Config) *Machine {
	cfg.Limits = cfg.Limits.withDefaults()
	return &Machine{cfg: cfg, Params: DefaultParams()}
}

func (m *Machine) fail(status uint16, format string, args ...any) Response {
	m.failed = true
	return Response{Status: status, Reason: fmt.Sprintf(format, args...)}
}

// Step consumes one Login Request and returns the response.
func (m *Machine) Step(req Request) Response {
	if m.failed || m.Done {
		return m.fail(StatusInvalidDuring, "login already finished")
	}
	m.exchanges++
	if m.exchanges > maxLoginExchanges {
		return m.fail(StatusInitiatorError, "too many login exchanges")
	}
	if !m.started {
		m.started = true
		if req.VersionMin > 0 {
			return m.fail(StatusBadVersion, "unsupported version-min %d", req.VersionMin)
		}
		m.stage = req.CSG
	}
	if req.CSG != m.stage {
		if m.transitOK && req.CSG == m.nextStage {
			m.stage = req.CSG
			m.transitOK = false
		} else {
			return m.fail(StatusInvalidDuring, "unexpected stage %d (current %d)", req.CSG, m.stage)
		}
	}
	if m.stage != StageSecurity && m.stage != StageOperational {
		return m.fail(StatusInvalidDuring, "invalid current stage %d", m.stage)
	}
	m.pending = append(m.pending, req.Data...)
	if len(m.pending) > maxLoginText {
		return m.fail(StatusInitiatorError, "login text exceeds %d bytes", maxLoginText)
	}
	if req.Continue {
		if req.Transit {
			return m.fail(StatusInitiatorError, "both C and T bits set")
		}
		return Response{CSG: m.stage}
	}
	kvs, err := ParseText(m.pending)
	m.pending = m.pending[:0]
	if err != nil {
		return m.fail(StatusInitiatorError, "%v", err)
	}
	var out []KV
	chap := map[string]string{}
	for _, kv := range kvs {
		switch kv.Key {
		case "InitiatorName":
			if kv.Value == "" || len(kv.Value) > 223 {
				return m.fail(StatusInitiatorError, "invalid InitiatorName")
			}
			if m.InitiatorName != "" && m.InitiatorName != kv.Value {
				return m.fail(StatusInitiatorError, "InitiatorName changed during login")
			}
			m.InitiatorName = kv.Value
		case "InitiatorAlias":
			m.Alias = kv.Value
		case "SessionType":
			switch kv.Value {
			case "Normal":
				m.Discovery = false
			case "Discovery":
				m.Discovery = true
			default:
				return m.fail(StatusBadSessionType, "session type %q", kv.Value)
			}
		case "TargetName":
			if m.TargetName != "" && m.TargetName != kv.Value {
				return m.fail(StatusInitiatorError, "TargetName changed during login")
			}
			m.TargetName = kv.Value
		case "AuthMethod":
			if m.stage != StageSecurity {
				return m.fail(StatusInitiatorError, "AuthMethod outside the security stage")
			}
			chap["AuthMethod"] = kv.Value
		case "CHAP_A", "CHAP_N", "CHAP_R", "CHAP_I", "CHAP_C":
			if m.stage != StageSecurity {
				return m.fail(StatusInitiatorError, "%s outside the security stage", kv.Key)
			}
			chap[kv.Key] = kv.Value
		case "TargetAlias", "TargetAddress", "TargetPortalGroupTag", "TargetSessionHandle":
			// target-declared keys; an initiator has nothing to say here
		case "SendTargets":
			out = append(out, KV{kv.Key, "Irrelevant"})
		default:
			resp, ok := m.Params.negotiateKey(m.cfg.Limits, kv.Key, kv.Value)
			switch {
			case !ok:
				out = append(out, KV{kv.Key, "NotUnderstood"})
			case resp != "":
				out = append(out, KV{kv.Key, resp})
			}
		}
	}
	if !m.sessionKnown {
		if m.InitiatorName == "" {
			return m.fail(StatusMissingParam, "InitiatorName missing")
		}
		if !m.Discovery {
			if m.TargetName == "" {
				return m.fail(StatusMissingParam, "TargetName missing")
			}
			t, ok := (*Target)(nil), false
			if m.cfg.Lookup != nil {
				t, ok = m.cfg.Lookup(m.TargetName)
			}
			if !ok || t == nil {
				return m.fail(StatusNotFound, "target %q not found", m.TargetName)
			}
			if t.Allowed != nil && !t.Allowed(m.InitiatorName) {
				return m.fail(StatusAuthzFailed, "initiator %q not allowed on target %q", m.InitiatorName, m.TargetName)
			}
			m.Target = t
			out = append(out, KV{"TargetPortalGroupTag", strconv.Itoa(int(t.PortalGroupTag))})
			if t.Alias != "" {
				out = append(out, KV{"TargetAlias", t.Alias})
			}
		}
		m.sessionKnown = true
	}
	var creds *CHAP
	if m.Target != nil {
		creds = m.Target.CHAP
	}
	if m.stage == StageSecurity {
		r, st, reason := m.authenticate(creds, chap)
		if st != 0 {
			return m.fail(st, "%s", reason)
		}
		out = append(out, r...)
	} else if creds != nil && !m.authDone {
		return m.fail(StatusAuthFailed, "target requires CHAP but the initiator skipped the security stage")
	}

	resp := Response{CSG: m.stage}
	if req.Transit {
		if req.NSG <= m.stage || req.NSG == 2 || req.NSG > StageFullFeature {
			return m.fail(StatusInitiatorError, "invalid next stage %d from %d", req.NSG, m.stage)
		}
		if m.stage == StageSecurity && !m.authDone {
			if creds == nil && m.chapState == 0 {
				m.authDone = true
			}
		}
		if m.stage != StageSecurity || m.authDone {
			resp.Transit = true
			resp.NSG = req.NSG
			m.transitOK = true
			m.nextStage = req.NSG
			if req.NSG == StageFullFeature {
				m.Done = true
			}
		}
	}
	if !m.declared && (m.stage == StageOperational || m.Done) {
		m.declared = true
		m.Params.TargetMaxRecvDataSegmentLength = m.cfg.Limits.MaxRecvDataSegmentLength
		out = append(out, KV{"MaxRecvDataSegmentLength", strconv.FormatUint(uint64(m.cfg.Limits.MaxRecvDataSegmentLength), 10)})
	}
	if m.Done {
		// Keys the initiator never offered keep RFC defaults; clamp them to
		// our limits.
		m.Params.MaxBurstLength = min(m.Params.MaxBurstLength, m.cfg.Limits.MaxBurstLength)
		m.Params.FirstBurstLength = min(m.Params.FirstBurstLength, m.cfg.Limits.FirstBurstLength, m.Params.MaxBurstLength)
		if !m.declared {
			m.Params.TargetMaxRecvDataSegmentLength = m.cfg.Limits.MaxRecvDataSegmentLength
		}
	}
	resp.Data = EncodeText(out)
	return resp
}

// authenticate handles AuthMethod and CHAP keys of one security-stage PDU.
func (m *Machine) authenticate(creds *CHAP, keys map[string]string) ([]KV, uint16, string) {
	var out []KV
	if am, ok := keys["AuthMethod"]; ok {
		if m.chapState != 0 || m.authDone {
			return nil, StatusInitiatorError, "AuthMethod renegotiated"
		}
		methods := strings.Split(am, ",")
		switch {
		case creds != nil && slices.Contains(methods, "CHAP"):
			m.chapState = 1
			out = append(out, KV{"AuthMethod", "CHAP"})
		case creds == nil && slices.Contains(methods, "None"):
			m.authDone = true
			out = append(out, KV{"AuthMethod", "None"})
		default:
			return nil, StatusAuthFailed, fmt.Sprintf("no acceptable AuthMethod in %q", am)
		}
	}
	if a, ok := keys["CHAP_A"]; ok {
		if m.chapState != 1 {
			return nil, StatusAuthFailed, "CHAP_A out of sequence"
		}
		if !slices.Contains(strings.Split(a, ","), "5") {
			return nil, StatusAuthFailed, fmt.Sprintf("CHAP algorithm %q not supported (only MD5)", a)
		}
		m.chapID = randomBytes(1)[0]
		m.chapC = randomBytes(chapChallengeLen)
		m.chapState = 2
		out = append(out, KV{"CHAP_A", "5"}, KV{"CHAP_I", strconv.Itoa(int(m.chapID))}, KV{"CHAP_C", EncodeHex(m.chapC)})
	}
	n, hasN := keys["CHAP_N"]
	r, hasR := keys["CHAP_R"]
	ii, hasI := keys["CHAP_I"]
	ic, hasC := keys["CHAP_C"]
	if hasN || hasR {
		if m.chapState != 2 || !hasN || !hasR {
			return nil, StatusAuthFailed, "CHAP response out of sequence"
		}
		got, err := DecodeBinary(r)
		if err != nil {
			return nil, StatusAuthFailed, "CHAP_R undecodable"
		}
		want := ChapResponse(m.chapID, creds.Secret, m.chapC)
		// Evaluate both comparisons so timing does not tell which failed.
		userOK := constEqual([]byte(n), []byte(creds.Username))
		respOK := constEqual(got, want)
		if !userOK || !respOK {
			return nil, StatusAuthFailed, fmt.Sprintf("CHAP authentication of %q failed", m.InitiatorName)
		}
		if hasI != hasC {
			return nil, StatusAuthFailed, "mutual CHAP needs both CHAP_I and CHAP_C"
		}
		if hasI {
			if creds.MutualSecret == "" {
				return nil, StatusAuthFailed, "initiator asked for mutual CHAP but the target has no mutual secret"
			}
			id, err := strconv.ParseUint(ii, 0, 8)
			if err != nil {
				return nil, StatusAuthFailed, "CHAP_I invalid"
			}
			c, err := DecodeBinary(ic)
			if err != nil || len(c) == 0 || len(c) > maxInitiatorChallenge {
				return nil, StatusAuthFailed, "CHAP_C invalid"
			}
			if constEqual(c, m.chapC) {
				return nil, StatusAuthFailed, "initiator reflected the target's challenge"
			}
			out = append(out, KV{"CHAP_N", creds.MutualUsername}, KV{"CHAP_R", EncodeHex(ChapResponse(byte(id), creds.MutualSecret, c))})
		}
		m.chapState = 3
		m.authDone = true
	} else if hasI || hasC {
		return nil, StatusAuthFailed, "CHAP_I/CHAP_C without a response"
	}
	return out, 0, ""
}
