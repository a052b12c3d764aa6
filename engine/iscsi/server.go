// Package iscsi is Lockstep's iSCSI target: it serves blockdev.Devices as
// LUNs of named targets over TCP (RFC 7143), with SendTargets discovery,
// CHAP and per-target initiator ACLs, and concurrent command execution
// within a session. Sub-packages hold the wire codec (pdu), the login phase
// (login) and the SCSI disk command set (scsi).
package iscsi

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"sort"
	"strings"
	"sync"
	"time"

	"github.com/lockstep-io/lockstep/engine/blockdev"
	"github.com/lockstep-io/lockstep/engine/iscsi/login"
	"github.com/lockstep-io/lockstep/engine/iscsi/scsi"
)

// Errors returned by the Server.
var (
	ErrClosed         = errors.New("iscsi: server closed")
	ErrTargetExists   = errors.New("iscsi: target already exists")
	ErrTargetNotFound = errors.New("iscsi: target not found")
	ErrInvalidConfig  = errors.New("iscsi: invalid target configuration")
)

// TargetConfig describes one target.
type TargetConfig struct {
	// IQN is the target name (iqn.*, eui.* or naa.*).
	IQN string
	// Alias is an optional human-readable TargetAlias.
	Alias string
	// LUNs are the logical units; LUN 0 normally.
	LUNs []LUNConfig
	// AllowedInitiators lists the initiator names that may log in; empty
	// allows any.
	AllowedInitiators []string
	// CHAP, when set, is required on every login to this target.
	CHAP *CHAPConfig
}

// LUNConfig is one logical unit.
type LUNConfig struct {
	ID     uint64
	Device blockdev.Device
}

// CHAPConfig holds CHAP credentials; secrets are at least 12 bytes and are
// never logged.
type CHAPConfig struct {
	Username, Secret             string
	MutualUsername, MutualSecret string
}

// ServerConfig configures a Server; zero values take defaults.
type ServerConfig struct {
	// Portal is the address advertised in SendTargets ("host:port"); empty
	// advertises the local address of the discovery connection.
	Portal string
	Logger *slog.Logger
	// MaxSessions bounds concurrent sessions (default 256).
	MaxSessions int
	// QueueDepth is the command window and the number of commands a
	// session executes concurrently (default 128).
	QueueDepth int
	// MaxRecvDataSegmentLength, MaxBurstLength and FirstBurstLength are
	// the target's limits offered in negotiation.
	MaxRecvDataSegmentLength, MaxBurstLength, FirstBurstLength uint32
	// RequireHeaderDigest and RequireDataDigest make CRC32C mandatory;
	// otherwise the initiator's preference decides.
	RequireHeaderDigest, RequireDataDigest bool
	// LoginTimeout bounds the whole login phase (default 15s).
	LoginTimeout time.Duration
	// WriteTimeout bounds one send to an initiator (default 30s).
	WriteTimeout time.Duration
	// PollSpin is how long a connection polls its socket for the next
	// request before it waits in the network poller (see spinReader):
	// 0 takes DefaultPollSpin, a negative value never polls.
	PollSpin time.Duration
}

// DefaultPollSpin suits initiators on the same host or a fast network: it
// covers the gap between a response and the next request at queue depth 1.
const DefaultPollSpin = 200 * time.Microsecond

type target struct {
	cfg   TargetConfig
	info  *login.Target
	luns  map[uint64]*scsi.Disk
	ids   []uint64
	disks []*scsi.Disk // the LUs, for EXTENDED COPY
	conns map[*conn]struct{}
}

// Server is an iSCSI target portal serving any number of targets.
type Server struct {
	cfg ServerConfig
	log *slog.Logger

	mu        sync.Mutex
	targets   map[string]*target
	conns     map[*conn]struct{}
	listeners map[net.Listener]struct{}
	nextTSIH  uint16
	closed    bool
	wg        sync.WaitGroup
	spinSlots *spinSlots
}

// NewServer returns a server with no targets.
func NewServer(cfg ServerConfig) *Server {
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	if cfg.MaxSessions <= 0 {
		cfg.MaxSessions = 256
	}
	if cfg.QueueDepth <= 0 {
		cfg.QueueDepth = 128
	}
	if cfg.LoginTimeout <= 0 {
		cfg.LoginTimeout = 15 * time.Second
	}
	if cfg.WriteTimeout <= 0 {
		cfg.WriteTimeout = 30 * time.Second
	}
	if cfg.PollSpin == 0 {
		cfg.PollSpin = DefaultPollSpin
	}
	return &Server{
		cfg:       cfg,
		log:       cfg.Logger,
		targets:   map[string]*target{},
		conns:     map[*conn]struct{}{},
		listeners: map[net.Listener]struct{}{},
		spinSlots: newSpinSlots(),
	}
}

func validIQN(s string) bool {
	if len(s) < 5 || len(s) > 223 {
		return false
	}
	if !strings.HasPrefix(s, "iqn.") && !strings.HasPrefix(s, "eui.") && !strings.HasPrefix(s, "naa.") {
		return false
	}
	for _, r := range s {
		if r <= ' ' || r > '~' {
			return false
		}
	}
	return true
}

// AddTarget adds a target; it may be called while serving.
func (s *Server) AddTarget(cfg TargetConfig) error {
	if !validIQN(cfg.IQN) {
		return fmt.Errorf("%w: target name %q is not an iqn./eui./naa. name", ErrInvalidConfig, cfg.IQN)
	}
	if len(cfg.LUNs) == 0 {
		return fmt.Errorf("%w: target %q has no LUNs", ErrInvalidConfig, cfg.IQN)
	}
	t := &target{cfg: cfg, luns: map[uint64]*scsi.Disk{}, conns: map[*conn]struct{}{}}
	for _, l := range cfg.LUNs {
		if l.Device == nil || l.ID >= 16384 {
			return fmt.Errorf("%w: target %q LUN %d needs a device and an ID below 16384", ErrInvalidConfig, cfg.IQN, l.ID)
		}
		if _, dup := t.luns[l.ID]; dup {
			return fmt.Errorf("%w: target %q has LUN %d twice", ErrInvalidConfig, cfg.IQN, l.ID)
		}
		t.luns[l.ID] = scsi.NewDisk(l.Device)
		t.ids = append(t.ids, l.ID)
	}
	sort.Slice(t.ids, func(i, j int) bool { return t.ids[i] < t.ids[j] })
	for _, id := range t.ids {
		t.disks = append(t.disks, t.luns[id])
	}
	info := &login.Target{Name: cfg.IQN, Alias: cfg.Alias, PortalGroupTag: 1}
	if cfg.CHAP != nil {
		c := &login.CHAP{Username: cfg.CHAP.Username, Secret: cfg.CHAP.Secret,
			MutualUsername: cfg.CHAP.MutualUsername, MutualSecret: cfg.CHAP.MutualSecret}
		if err := c.Validate(); err != nil {
			return fmt.Errorf("%w: target %q: %w", ErrInvalidConfig, cfg.IQN, err)
		}
		info.CHAP = c
	}
	if len(cfg.AllowedInitiators) > 0 {
		allowed := map[string]bool{}
		for _, n := range cfg.AllowedInitiators {
			allowed[n] = true
		}
		info.Allowed = func(n string) bool { return allowed[n] }
	}
	t.info = info
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return ErrClosed
	}
	if _, ok := s.targets[cfg.IQN]; ok {
		return fmt.Errorf("%w: %q", ErrTargetExists, cfg.IQN)
	}
	s.targets[cfg.IQN] = t
	s.log.Info("iscsi target added", "iqn", cfg.IQN, "luns", len(t.ids), "chap", info.CHAP != nil, "acl", len(cfg.AllowedInitiators))
	return nil
}

// RemoveTarget removes a target and closes its sessions.
func (s *Server) RemoveTarget(iqn string) error {
	s.mu.Lock()
	t, ok := s.targets[iqn]
	if !ok {
		s.mu.Unlock()
		return fmt.Errorf("%w: %q", ErrTargetNotFound, iqn)
	}
	delete(s.targets, iqn)
	var cs []*conn
	for c := range t.conns {
		cs = append(cs, c)
	}
	s.mu.Unlock()
	for _, c := range cs {
		c.close()
	}
	s.log.Info("iscsi target removed", "iqn", iqn, "sessions_closed", len(cs))
	return nil
}

func (s *Server) lookup(name string) (*target, bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	t, ok := s.targets[name]
	return t, ok
}

// Serve accepts connections on l until ctx ends or Close is called. Sessions
// already running keep running until Close (or RemoveTarget) ends them.
func (s *Server) Serve(ctx context.Context, l net.Listener) error {
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		return ErrClosed
	}
	s.listeners[l] = struct{}{}
	s.mu.Unlock()
	stop := context.AfterFunc(ctx, func() { l.Close() })
	defer stop()
	defer func() {
		s.mu.Lock()
		delete(s.listeners, l)
		s.mu.Unlock()
	}()
	var delay time.Duration
	for {
		nc, err := l.Accept()
		if err != nil {
			s.mu.Lock()
			closed := s.closed
			s.mu.Unlock()
			if closed || ctx.Err() != nil {
				return nil
			}
			var ne net.Error
			if errors.As(err, &ne) && ne.Timeout() {
				delay = min(max(2*delay, 5*time.Millisecond), time.Second)
				time.Sleep(delay)
				continue
			}
			return fmt.Errorf("iscsi: accept on %s: %w", l.Addr(), err)
		}
		delay = 0
		c := newConn(s, nc)
		s.mu.Lock()
		if s.closed {
			s.mu.Unlock()
			nc.Close()
			return nil
		}
		s.conns[c] = struct{}{}
		s.wg.Add(1)
		s.mu.Unlock()
		go func() {
			defer s.wg.Done()
			c.serve()
		}()
	}
}

// Close stops every listener and connection and waits for them.
func (s *Server) Close() error {
	s.mu.Lock()
	s.closed = true
	for l := range s.listeners {
		l.Close()
	}
	var cs []*conn
	for c := range s.conns {
		cs = append(cs, c)
	}
	s.mu.Unlock()
	for _, c := range cs {
		c.close()
	}
	s.wg.Wait()
	return nil
}

// register makes a logged-in connection a session of its target, closing
// an older session of the same initiator and ISID (session reinstatement).
func (s *Server) register(c *conn, t *target) (uint16, uint16) {
	s.mu.Lock()
	var old []*conn
	sessions := 0
	for o := range s.conns {
		if o.loggedIn {
			sessions++
		}
		if o != c && o.loggedIn && o.tgt == t && t != nil && o.initiator == c.initiator && o.isid == c.isid {
			old = append(old, o)
		}
	}
	if sessions-len(old) >= s.cfg.MaxSessions {
		s.mu.Unlock()
		return 0, login.StatusOutOfResources
	}
	if t != nil {
		if cur, ok := s.targets[t.cfg.IQN]; !ok || cur != t {
			s.mu.Unlock()
			return 0, login.StatusTargetRemoved
		}
		t.conns[c] = struct{}{}
		c.nexus = scsi.Nexus(fmt.Sprintf("%s,i,0x%x", c.initiator, c.isid))
		for _, d := range t.luns {
			d.Attach(c.nexus)
		}
		c.attached = true
	}
	s.nextTSIH++
	if s.nextTSIH == 0 {
		s.nextTSIH = 1
	}
	tsih := s.nextTSIH
	c.loggedIn = true
	s.mu.Unlock()
	for _, o := range old {
		s.log.Info("iscsi session reinstated", "initiator", c.initiator)
		o.close()
	}
	return tsih, 0
}

func (s *Server) unregister(c *conn) {
	s.mu.Lock()
	defer s.mu.Unlock()
	delete(s.conns, c)
	if c.tgt != nil {
		delete(c.tgt.conns, c)
	}
	if c.attached {
		// The session is gone: for the LUs, a loss of its I_T nexus
		// unless another session of the same initiator port remains.
		for _, d := range c.tgt.luns {
			d.Detach(c.nexus)
		}
		c.attached = false
	}
}

// sessions returns the connections logged in to t.
func (s *Server) sessions(t *target) []*conn {
	s.mu.Lock()
	defer s.mu.Unlock()
	cs := make([]*conn, 0, len(t.conns))
	for c := range t.conns {
		cs = append(cs, c)
	}
	return cs
}

// sendTargets lists the targets an initiator may see.
func (s *Server) sendTargets(initiator, which, portal string) []login.KV {
	s.mu.Lock()
	defer s.mu.Unlock()
	var names []string
	for n, t := range s.targets {
		if which != "All" && which != n {
			continue
		}
		if t.info.Allowed != nil && !t.info.Allowed(initiator) {
			continue
		}
		names = append(names, n)
	}
	sort.Strings(names)
	var kvs []login.KV
	for _, n := range names {
		kvs = append(kvs, login.KV{Key: "TargetName", Value: n}, login.KV{Key: "TargetAddress", Value: portal + ",1"})
	}
	return kvs
}
