// Package mail is the built-in plugin for a Postfix + Dovecot mail server.
//
// # What a cut must hold
//
// Every message that got "250" before the marker must be in the spool as of
// the marker, and no message there may be half-written. The first half
// holds for any crash-consistent cut taken after the 250: Postfix's cleanup
// fsyncs the queue file and marks it complete (owner-execute bit) before
// smtpd answers 250, and a message leaves the queue only after the
// delivery agent has fsynced it into the mailbox. So Freeze does not need
// to push anything anywhere; it must make sure that at the cut no message
// is being written: no queue file in incoming/ or maildrop/ still open by
// its writer, no Maildir delivery or IMAP APPEND half way in a tmp/ file
// (or half appended to an mbox), and that the queue files do not move
// between queue directories while the cut is read.
//
// # Freeze: stop at a quiet instant
//
// Freeze pauses every process of the Postfix instance and of Dovecot with
// SIGSTOP: each master first (so it forks no new child), then every
// process below it, walked again until no new one appears, and waits until
// each has really stopped (a process inside write(2) stops when the call
// returns). It then looks at the files the stopped processes hold open for
// writing (/proc/PID/fd and fdinfo). If one is a message being written, it
// first resumes only the writers (for up to a second while they do disk
// I/O): with the masters, smtpd and qmgr stopped no transaction starts, so
// a delivery agent finishes its message (closed and linked out of tmp/)
// and the instant after is quiet. A writer that cannot finish alone, seen
// asleep for 5 ms (cleanup waiting for its smtpd), makes Freeze resume
// everything, let it run for a few milliseconds and try again, until
// drain_timeout. Nothing is moved, re-queued or
// reconfigured: postsuper -h would move queue files to hold/ (and the cut
// would then restore held mail), and reloading Postfix with
// defer_transports would rewrite main.cf on the volume being protected.
//
// While frozen, SMTP clients and IMAP users see a pause, not an error: TCP
// connections queue in the kernel's backlog and complete on Thaw; SMTP's
// minutes-long timeouts dwarf the freeze window (10 s by default).
//
// # Thaw always happens
//
// Thaw resumes every stopped process (those Freeze recorded, and any
// stopped process of the two trees, so a plugin restarted without its
// state can still thaw). Besides the SDK's watchdog, Freeze starts a small
// guard process in its own session that resumes the recorded processes
// when hold elapses, so the mail server is released even if the plugin
// process is killed.
//
// # Evidence
//
// Read from the queue directory while frozen (showq is stopped too): the
// number of queue files per queue (maildrop, incoming, active, deferred,
// hold, corrupt), their total, the newest queue file's id and time, how
// many processes were paused, how many attempts the quiet instant took and
// how many writers were let finish alone.
//
// # Stop and Start
//
// Stop (for a restore) thaws, runs `postfix -c DIR stop` and
// `dovecot -c CONF stop`, and waits until every process of both is gone, so
// nothing holds the volumes. Start runs `postfix -c DIR start` and
// `dovecot -c CONF` and waits for the SMTP and IMAP listeners.
//
// # Limits
//
// The plugin runs on the mail server's machine (host must be empty or
// this machine). Messages submitted locally through sendmail(1) are written
// by postdrop, outside Postfix's process tree: one in progress at the cut is
// an incomplete maildrop file, which Postfix discards as it does after a
// crash; its sender got no success either. A message delivered just before
// the cut may still be in the queue too (delivered, not yet removed), so a
// restore delivers it again: mail is at-least-once, never lost.
package mail

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/lockstep-io/lockstep/plugins/sdk"
)

// Name is the plugin's name in policies.
const Name = "mail"

// Version is the plugin's version.
const Version = "0.1.0"

// Schema is the mail plugin's app schema.
var Schema = sdk.Schema{
	Doc: "Postfix and Dovecot: pauses both at an instant when no message is being written (SIGSTOP, nothing moved or reconfigured); the evidence is the queue state.",
	Attributes: []sdk.Attribute{
		{Name: "postfix_config_directory", Type: sdk.String, Default: "/etc/postfix", Absolute: true, NonEmpty: true, Doc: "Postfix's configuration directory (`postfix -c`), for a non-default instance."},
		{Name: "postfix_queue_directory", Type: sdk.String, Default: "/var/spool/postfix", Absolute: true, NonEmpty: true, Doc: "Postfix's queue directory; its `pid/master.pid` names the instance's master."},
		{Name: "dovecot_config", Type: sdk.String, Default: "/etc/dovecot/dovecot.conf", Absolute: true, Doc: "Dovecot's configuration file (`dovecot -c`); empty when the server has no Dovecot."},
		{Name: "dovecot_base_directory", Type: sdk.String, Absolute: true, Doc: "Dovecot's base_dir, which holds `master.pid`; default: asked from `doveconf`."},
		{Name: "dovecot_mail_location", Type: sdk.String, Doc: "Dovecot's mail_location (`maildir:/var/vmail/%d/%n`); for mbox and dbox stores it names the files a delivery writes."},
		{Name: "smtp_address", Type: sdk.String, Default: "127.0.0.1:25", NonEmpty: true, Doc: "host:port of the SMTP listener, for the health check."},
		{Name: "imap_address", Type: sdk.String, Default: "127.0.0.1:143", NonEmpty: true, Doc: "host:port of the IMAP listener, for the health check."},
		{Name: "imap_user", Type: sdk.String, Doc: "IMAP user for the health check; empty checks the greeting only."},
		{Name: "imap_password", Type: sdk.Secret, Doc: "Password of `imap_user`."},
		{Name: "drain_timeout", Type: sdk.Duration, Default: 5 * time.Second, Doc: "How long Freeze looks for an instant when no message is being written before it fails (and leaves the server running)."},
		{Name: "host", Type: sdk.String, Doc: "Where the app runs; empty means the daemon's machine. The mail plugin supports only its own machine."},
	},
}

// Plugin is the mail plugin. It remembers, per app, the processes a Freeze
// paused, so Thaw can resume them.
type Plugin struct {
	mu   sync.Mutex
	apps map[string]*appState
}

var _ sdk.Plugin = (*Plugin)(nil)

// New returns the mail plugin.
func New() sdk.Plugin { return &Plugin{apps: map[string]*appState{}} }

// appState serialises Freeze and Thaw of one app; Thaw may race a Freeze
// (the SDK's watchdog).
type appState struct {
	mu     sync.Mutex
	gen    uint64 // bumped by every Thaw
	pids   []int  // processes paused, in stop order
	guard  *os.Process
	pidLog string // file the guard reads the pids from
}

func (p *Plugin) state(app sdk.App) *appState {
	p.mu.Lock()
	defer p.mu.Unlock()
	k := app.Service + "\x00" + app.Name
	s := p.apps[k]
	if s == nil {
		s = &appState{}
		p.apps[k] = s
	}
	return s
}

// Info implements sdk.Plugin.
func (*Plugin) Info(context.Context) (sdk.Info, error) {
	return sdk.Info{Name: Name, Version: Version, Protocol: sdk.ProtocolVersion, Handles: []string{"postfix 3", "dovecot 2.3"}}, nil
}

// ConfigSchema implements sdk.Plugin.
func (*Plugin) ConfigSchema(context.Context) (sdk.Schema, error) { return Schema, nil }

// config is an app's configuration with defaults applied.
type config struct {
	postfixConf, queueDir    string
	dovecotConf, dovecotBase string
	mailLocation             string
	smtpAddr, imapAddr       string
	imapUser, imapPassword   string
	drain                    time.Duration
	host                     string
}

func configOf(app sdk.App) config {
	get := func(name string) string {
		if _, ok := app.Config[name]; ok {
			return app.Config.String(name)
		}
		for _, a := range Schema.Attributes {
			if a.Name == name {
				s, _ := a.Default.(string)
				return s
			}
		}
		return ""
	}
	c := config{
		postfixConf:  get("postfix_config_directory"),
		queueDir:     get("postfix_queue_directory"),
		dovecotConf:  get("dovecot_config"),
		dovecotBase:  get("dovecot_base_directory"),
		mailLocation: get("dovecot_mail_location"),
		smtpAddr:     get("smtp_address"),
		imapAddr:     get("imap_address"),
		imapUser:     get("imap_user"),
		imapPassword: get("imap_password"),
		host:         get("host"),
		drain:        app.Config.Duration("drain_timeout"),
	}
	if c.drain <= 0 {
		c.drain = 5 * time.Second
	}
	return c
}

// Validate implements sdk.Plugin. It reads files but talks to no server:
// the servers may be down while a policy is checked.
func (*Plugin) Validate(_ context.Context, app sdk.App) (sdk.Diagnostics, error) {
	c := configOf(app)
	var diags sdk.Diagnostics
	add := func(attr, summary, detail string) {
		diags = append(diags, sdk.Diagnostic{Attribute: attr, Summary: summary, Detail: detail})
	}
	if !localHost(c.host) {
		add("host", "remote mail servers are not supported", fmt.Sprintf("The mail plugin pauses processes on its own machine; run it on %q (host empty).", c.host))
	}
	if _, err := os.Stat(filepath.Join(c.postfixConf, "main.cf")); err != nil {
		add("postfix_config_directory", "no main.cf", fmt.Sprintf("%q has no main.cf: %v.", c.postfixConf, err))
	}
	if !isDir(c.queueDir) {
		add("postfix_queue_directory", "not a directory", fmt.Sprintf("%q is not a directory.", c.queueDir))
	}
	if c.dovecotConf != "" {
		if _, err := os.Stat(c.dovecotConf); err != nil {
			add("dovecot_config", "no such file", fmt.Sprintf("%q: %v.", c.dovecotConf, err))
		}
	}
	if c.mailLocation != "" {
		if _, _, ok := parseLocation(c.mailLocation); !ok {
			add("dovecot_mail_location", "unknown mailbox format", fmt.Sprintf("%q: want maildir:, mbox:, sdbox: or mdbox: followed by a path.", c.mailLocation))
		}
	}
	for _, a := range []struct{ name, v string }{{"smtp_address", c.smtpAddr}, {"imap_address", c.imapAddr}} {
		if _, _, err := net.SplitHostPort(a.v); err != nil {
			add(a.name, "not host:port", fmt.Sprintf("%q: %v.", a.v, err))
		}
	}
	if c.imapUser != "" && c.imapPassword == "" {
		add("imap_password", "missing", "imap_user is set, so the health check needs imap_password.")
	}
	if c.imapUser == "" && c.imapPassword != "" {
		add("imap_user", "missing", "imap_password is set but imap_user is not.")
	}
	for _, b := range []string{"postfix", "dovecot"} {
		if b == "dovecot" && c.dovecotConf == "" {
			continue
		}
		if _, err := command(b); err != nil {
			add("", b+" not installed", err.Error())
		}
	}
	return diags, nil
}

func localHost(h string) bool {
	if h == "" || h == "localhost" || h == "127.0.0.1" || h == "::1" {
		return true
	}
	name, err := os.Hostname()
	return err == nil && strings.EqualFold(h, name)
}

// parseLocation splits a mail_location into its format and the static
// part of its path (up to the first variable).
func parseLocation(loc string) (format, root string, ok bool) {
	format, rest, found := strings.Cut(loc, ":")
	if !found {
		return "", "", false
	}
	switch format {
	case "maildir", "mbox", "sdbox", "mdbox":
	default:
		return "", "", false
	}
	path, _, _ := strings.Cut(rest, ":")
	if i := strings.IndexAny(path, "%~"); i >= 0 {
		path = filepath.Dir(path[:i] + "x")
	}
	if !filepath.IsAbs(path) {
		path = ""
	}
	return format, path, true
}

// Prepare implements sdk.Plugin. Nothing shortens the freeze: there is no
// checkpoint to take, and flushing the queue would only add deliveries.
func (*Plugin) Prepare(context.Context, sdk.App) error { return nil }

// masters returns the pids of the Postfix and Dovecot masters.
func (c config) masters(ctx context.Context) (postfix, dovecot int, err error) {
	postfix = readPIDFile(filepath.Join(c.queueDir, "pid", "master.pid"))
	if postfix == 0 {
		return 0, 0, fmt.Errorf("postfix (%s): not running: no live master in %s", c.postfixConf, filepath.Join(c.queueDir, "pid", "master.pid"))
	}
	if c.dovecotConf == "" {
		return postfix, 0, nil
	}
	base, err := c.baseDir(ctx)
	if err != nil {
		return postfix, 0, err
	}
	dovecot = readPIDFile(filepath.Join(base, "master.pid"))
	if dovecot == 0 {
		return postfix, 0, fmt.Errorf("dovecot (%s): not running: no live master in %s", c.dovecotConf, filepath.Join(base, "master.pid"))
	}
	return postfix, dovecot, nil
}

func (c config) baseDir(ctx context.Context) (string, error) {
	if c.dovecotBase != "" {
		return c.dovecotBase, nil
	}
	out, err := run(ctx, "doveconf", "-c", c.dovecotConf, "-h", "base_dir")
	if err != nil {
		return "", fmt.Errorf("dovecot (%s): base_dir: %w", c.dovecotConf, err)
	}
	return strings.TrimSpace(out), nil
}

// Freeze implements sdk.Plugin.
func (p *Plugin) Freeze(ctx context.Context, app sdk.App, hold time.Duration) (sdk.Evidence, error) {
	c := configOf(app)
	if hold <= 0 {
		hold = sdk.DefaultHold
	}
	s := p.state(app)
	s.mu.Lock()
	if len(s.pids) > 0 {
		s.thawLocked() // a Freeze without Thaw: start over
	}
	gen := s.gen
	s.mu.Unlock()

	postfix, dovecot, err := c.masters(ctx)
	if err != nil {
		return nil, err
	}
	roots := []int{postfix}
	if dovecot != 0 {
		roots = append(roots, dovecot)
	}
	sp := spool{queueDir: c.queueDir}
	if format, root, ok := parseLocation(c.mailLocation); ok && format != "maildir" {
		sp.mboxRoot = root
	}
	dctx, cancel := context.WithTimeout(ctx, c.drain)
	defer cancel()

	if err := s.startGuard(hold); err != nil {
		return nil, err
	}
	start := time.Now()
	deadline := start.Add(c.drain)
	finished := 0 // writers let finish their message
	pause := 2 * time.Millisecond
	for attempt := 1; ; attempt++ {
		s.mu.Lock()
		if s.gen != gen {
			s.thawLocked()
			s.mu.Unlock()
			return nil, errors.New("mail: thawed while freezing")
		}
		pids, err := stopTrees(ctx, roots)
		s.pids = pids
		s.writePIDLog()
		if err != nil {
			s.thawLocked()
			s.mu.Unlock()
			return nil, fmt.Errorf("mail: freeze: %w", err)
		}
		busy := sp.writers(pids)
		if len(busy) > 0 {
			// Let only the writers run: with the masters, smtpd and qmgr
			// stopped no new transaction starts, so a delivery agent
			// finishes its message and the instant after it is quiet.
			if n, ok := letFinish(ctx, sp, busy, min(finishWait, time.Until(deadline))); ok {
				busy = sp.writers(pids)
				finished += n
			}
		}
		if len(busy) == 0 {
			q, err := readQueue(c.queueDir)
			if err != nil {
				s.thawLocked()
				s.mu.Unlock()
				return nil, fmt.Errorf("mail: postfix queue %s: %w", c.queueDir, err)
			}
			s.mu.Unlock()
			ev := sdk.Evidence{
				"queue_total":      q.Total,
				"newest_queue_id":  q.NewestID,
				"paused_processes": len(pids),
				"drain_attempts":   attempt,
				"drain_finished":   finished,
				"drain_ms":         time.Since(start).Milliseconds(),
				"frozen_at":        time.Now().UTC().Format(time.RFC3339Nano),
			}
			if !q.NewestTime.IsZero() {
				ev["newest_queue_time"] = q.NewestTime.UTC().Format(time.RFC3339Nano)
			}
			for _, name := range queues {
				ev["queue_"+name] = q.Counts[name]
			}
			return ev, nil
		}
		if dctx.Err() != nil {
			s.thawLocked()
			s.mu.Unlock()
			return nil, fmt.Errorf("mail: no instant without a message being written within drain_timeout %s (%d attempts): %s", c.drain, attempt, busy[0])
		}
		cont(pids)
		s.pids = nil
		s.mu.Unlock()
		select {
		case <-dctx.Done():
		case <-time.After(pause):
		}
		if pause < 50*time.Millisecond {
			pause *= 2
		}
	}
}

// startGuard starts the process that resumes the paused processes when
// hold elapses, even if this plugin process dies. It reads their pids from
// a file Freeze rewrites before each attempt.
func (s *appState) startGuard(hold time.Duration) error {
	f, err := os.CreateTemp("", "lockstep-mail-freeze-")
	if err != nil {
		return fmt.Errorf("mail: freeze guard: %w", err)
	}
	f.Close()
	sh := fmt.Sprintf(`sleep %.3f; kill -CONT $(cat %s) 2>/dev/null; rm -f %s`, hold.Seconds(), shellQuote(f.Name()), shellQuote(f.Name()))
	cmd := exec.Command("/bin/sh", "-c", sh)
	cmd.SysProcAttr = &syscall.SysProcAttr{Setsid: true}
	if err := cmd.Start(); err != nil {
		os.Remove(f.Name())
		return fmt.Errorf("mail: freeze guard: %w", err)
	}
	go func() { _ = cmd.Wait() }()
	s.mu.Lock()
	s.guard, s.pidLog = cmd.Process, f.Name()
	s.mu.Unlock()
	return nil
}

func shellQuote(s string) string { return "'" + strings.ReplaceAll(s, "'", `'\''`) + "'" }

// writePIDLog records the paused pids for the guard.
func (s *appState) writePIDLog() {
	if s.pidLog == "" {
		return
	}
	var b strings.Builder
	for _, pid := range s.pids {
		fmt.Fprintf(&b, "%d\n", pid)
	}
	tmp := s.pidLog + ".tmp"
	if os.WriteFile(tmp, []byte(b.String()), 0o600) == nil {
		_ = os.Rename(tmp, s.pidLog)
	}
}

// thawLocked resumes what this app's Freeze paused and ends its guard.
func (s *appState) thawLocked() {
	cont(s.pids)
	s.pids = nil
	s.gen++
	if s.guard != nil {
		// The guard leads its own process group: end its sleep too.
		_ = syscall.Kill(-s.guard.Pid, syscall.SIGKILL)
		s.guard = nil
	}
	if s.pidLog != "" {
		os.Remove(s.pidLog)
		os.Remove(s.pidLog + ".tmp")
		s.pidLog = ""
	}
}

// Thaw implements sdk.Plugin. It also resumes any stopped process of the
// two servers, so a Thaw after a plugin restart still releases them.
func (p *Plugin) Thaw(ctx context.Context, app sdk.App) error {
	s := p.state(app)
	s.mu.Lock()
	s.thawLocked()
	s.mu.Unlock()
	c := configOf(app)
	postfix := readPIDFile(filepath.Join(c.queueDir, "pid", "master.pid"))
	var dovecot int
	if c.dovecotConf != "" {
		if base, err := c.baseDir(ctx); err == nil {
			dovecot = readPIDFile(filepath.Join(base, "master.pid"))
		}
	}
	for _, root := range []int{postfix, dovecot} {
		if root == 0 {
			continue
		}
		for _, pid := range tree(root) {
			if st, ok := procState(pid); ok && (st == 'T') {
				_ = syscall.Kill(pid, syscall.SIGCONT)
			}
		}
	}
	return nil
}

// Health implements sdk.Plugin: the SMTP banner and an IMAP login.
func (*Plugin) Health(ctx context.Context, app sdk.App) (sdk.Health, error) {
	c := configOf(app)
	banner, err := checkSMTP(ctx, c.smtpAddr)
	if err != nil {
		return sdk.Health{OK: false, Detail: err.Error()}, nil
	}
	if err := checkIMAP(ctx, c.imapAddr, c.imapUser, c.imapPassword); err != nil {
		return sdk.Health{OK: false, Detail: err.Error()}, nil
	}
	detail := fmt.Sprintf("smtp %s: 220 %s; imap %s: greeting", c.smtpAddr, banner, c.imapAddr)
	if c.imapUser != "" {
		detail += fmt.Sprintf(", login as %q", c.imapUser)
	}
	return sdk.Health{OK: true, Detail: detail}, nil
}

// Stop implements sdk.Plugin.
func (p *Plugin) Stop(ctx context.Context, app sdk.App) error {
	if err := p.Thaw(ctx, app); err != nil {
		return err
	}
	c := configOf(app)
	if pid := readPIDFile(filepath.Join(c.queueDir, "pid", "master.pid")); pid != 0 {
		procs := tree(pid)
		if _, err := run(ctx, "postfix", "-c", c.postfixConf, "stop"); err != nil {
			return fmt.Errorf("mail: postfix (%s): stop: %w", c.postfixConf, err)
		}
		if err := waitGone(ctx, procs); err != nil {
			return fmt.Errorf("mail: postfix (%s): stop: %w", c.postfixConf, err)
		}
	}
	if c.dovecotConf == "" {
		return nil
	}
	base, err := c.baseDir(ctx)
	if err != nil {
		return err
	}
	if pid := readPIDFile(filepath.Join(base, "master.pid")); pid != 0 {
		procs := tree(pid)
		if _, err := run(ctx, "dovecot", "-c", c.dovecotConf, "stop"); err != nil {
			return fmt.Errorf("mail: dovecot (%s): stop: %w", c.dovecotConf, err)
		}
		if err := waitGone(ctx, procs); err != nil {
			return fmt.Errorf("mail: dovecot (%s): stop: %w", c.dovecotConf, err)
		}
	}
	return nil
}

// waitGone waits until every process has exited.
func waitGone(ctx context.Context, pids []int) error {
	for _, pid := range pids {
		for {
			st, ok := procState(pid)
			if !ok || st == 'Z' || st == 'X' {
				break
			}
			select {
			case <-ctx.Done():
				return fmt.Errorf("process %d still running: %w", pid, ctx.Err())
			case <-time.After(20 * time.Millisecond):
			}
		}
	}
	return nil
}

// Start implements sdk.Plugin.
func (*Plugin) Start(ctx context.Context, app sdk.App) error {
	c := configOf(app)
	if readPIDFile(filepath.Join(c.queueDir, "pid", "master.pid")) == 0 {
		if _, err := run(ctx, "postfix", "-c", c.postfixConf, "start"); err != nil {
			return fmt.Errorf("mail: postfix (%s): start: %w", c.postfixConf, err)
		}
	}
	if err := waitListen(ctx, c.smtpAddr); err != nil {
		return fmt.Errorf("mail: postfix (%s): start: %w", c.postfixConf, err)
	}
	if c.dovecotConf == "" {
		return nil
	}
	base, err := c.baseDir(ctx)
	if err != nil {
		return err
	}
	pidFile := filepath.Join(base, "master.pid")
	if readPIDFile(pidFile) == 0 {
		if _, err := run(ctx, "dovecot", "-c", c.dovecotConf); err != nil {
			return fmt.Errorf("mail: dovecot (%s): start: %w", c.dovecotConf, err)
		}
	}
	// Dovecot writes master.pid after it listens; Freeze and Stop need it.
	for readPIDFile(pidFile) == 0 {
		select {
		case <-ctx.Done():
			return fmt.Errorf("mail: dovecot (%s): start: no live master in %s: %w", c.dovecotConf, pidFile, ctx.Err())
		case <-time.After(20 * time.Millisecond):
		}
	}
	if err := waitListen(ctx, c.imapAddr); err != nil {
		return fmt.Errorf("mail: dovecot (%s): start: %w", c.dovecotConf, err)
	}
	return nil
}

func waitListen(ctx context.Context, addr string) error {
	for {
		conn, err := net.DialTimeout("tcp", addr, time.Second)
		if err == nil {
			conn.Close()
			return nil
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("%s not listening: %w", addr, err)
		case <-time.After(50 * time.Millisecond):
		}
	}
}

// command finds a Postfix or Dovecot program: in PATH, else in /usr/sbin
// (where Debian puts them, often outside a service's PATH).
func command(name string) (string, error) {
	if p, err := exec.LookPath(name); err == nil {
		return p, nil
	}
	p := filepath.Join("/usr/sbin", name)
	if _, err := os.Stat(p); err != nil {
		return "", fmt.Errorf("%s not found in PATH or /usr/sbin", name)
	}
	return p, nil
}

// run runs a program and returns its output. Output goes to a file, not a
// pipe: a daemon that keeps its parent's stdout would hold a pipe open.
// Postfix reports most errors to syslog or its maillog_file, not stderr.
func run(ctx context.Context, name string, args ...string) (string, error) {
	path, err := command(name)
	if err != nil {
		return "", err
	}
	f, err := os.CreateTemp("", "lockstep-mail-out-")
	if err != nil {
		return "", err
	}
	defer os.Remove(f.Name())
	defer f.Close()
	cmd := exec.CommandContext(ctx, path, args...)
	cmd.Stdout, cmd.Stderr = f, f
	err = cmd.Run()
	out, _ := os.ReadFile(f.Name())
	if err != nil {
		msg := strings.TrimSpace(string(out))
		if msg == "" {
			msg = "no output; see the mail log"
		}
		return string(out), fmt.Errorf("%s %s: %w: %s", name, strings.Join(args, " "), err, msg)
	}
	return string(out), nil
}
