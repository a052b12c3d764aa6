package mail

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"net"
	"net/mail"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/lockstep-io/lockstep/engine/store"
	"github.com/lockstep-io/lockstep/internal/chain"
	"github.com/lockstep-io/lockstep/internal/lunserver"
	"github.com/lockstep-io/lockstep/internal/servers"
	"github.com/lockstep-io/lockstep/internal/testenv"
	"github.com/lockstep-io/lockstep/plugins/builtin/fsfreeze"
	"github.com/lockstep-io/lockstep/plugins/sdk"
)

func appFor(m *servers.Mail) sdk.App {
	return sdk.App{Service: "mail", Name: "postfix-dovecot", Volumes: []string{"queue", "mailboxes"}, Config: sdk.Config{
		"postfix_config_directory": m.PostfixConfigDir,
		"postfix_queue_directory":  m.QueueDir,
		"dovecot_config":           m.DovecotConfig,
		"dovecot_base_directory":   m.DovecotBaseDir,
		"dovecot_mail_location":    m.MailLocation,
		"smtp_address":             m.SMTPAddr,
		"imap_address":             m.IMAPAddr,
		"imap_user":                m.User,
		"imap_password":            m.Password,
		"drain_timeout":            5 * time.Second,
	}}
}

func ctxT(t *testing.T, d time.Duration) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), d)
	t.Cleanup(cancel)
	return ctx
}

func TestHealth(t *testing.T) {
	m := servers.StartMail(t)
	p := New()
	app := appFor(m)
	h, err := p.Health(ctxT(t, 10*time.Second), app)
	if err != nil || !h.OK {
		t.Fatalf("health = %+v, %v; want ok", h, err)
	}
	t.Log(h.Detail)

	app.Config["imap_password"] = "wrong-" + m.Password
	h, err = p.Health(ctxT(t, 10*time.Second), app)
	if err != nil {
		t.Fatal(err)
	}
	if h.OK || !strings.Contains(h.Detail, "refused") || !strings.Contains(h.Detail, m.User) {
		t.Fatalf("health with a wrong password = %+v; want not ok, naming the refused login", h)
	}
	if strings.Contains(h.Detail, m.Password) {
		t.Fatalf("health detail shows the password: %q", h.Detail)
	}
	t.Log(h.Detail)

	app = appFor(m)
	app.Config["smtp_address"] = "127.0.0.1:1" // nothing listens there
	if h, _ := p.Health(ctxT(t, 10*time.Second), app); h.OK || !strings.Contains(h.Detail, "smtp") {
		t.Fatalf("health with SMTP down = %+v; want not ok", h)
	}
}

func TestFreezeThaw(t *testing.T) {
	m := servers.StartMail(t)
	p := New()
	app := appFor(m)
	sendOne(t, m)

	ev, err := p.Freeze(ctxT(t, 10*time.Second), app, 30*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = p.Thaw(context.Background(), app) })
	if _, err := json.Marshal(ev); err != nil {
		t.Fatalf("evidence does not encode: %v", err)
	}
	for _, k := range []string{"queue_total", "queue_active", "queue_deferred", "queue_incoming", "queue_hold", "newest_queue_id", "paused_processes", "frozen_at"} {
		if _, ok := ev[k]; !ok {
			t.Errorf("evidence lacks %s: %v", k, ev)
		}
	}
	t.Logf("evidence %v", ev)

	// Frozen: every process of both servers is stopped, and a new SMTP
	// client waits for its banner instead of being refused.
	for _, root := range []int{m.PostfixMasterPID(), m.DovecotMasterPID()} {
		for _, pid := range tree(root) {
			if st, ok := procState(pid); ok && st != 'T' {
				t.Errorf("process %d is %c while frozen", pid, st)
			}
		}
	}
	c, err := net.Dial("tcp", m.SMTPAddr)
	if err != nil {
		t.Fatalf("smtp connect while frozen: %v (want it to wait, not fail)", err)
	}
	defer c.Close()
	_ = c.SetReadDeadline(time.Now().Add(300 * time.Millisecond))
	if n, err := c.Read(make([]byte, 64)); err == nil {
		t.Fatalf("got %d bytes of banner while frozen", n)
	}

	if err := p.Thaw(ctxT(t, 10*time.Second), app); err != nil {
		t.Fatal(err)
	}
	_ = c.SetReadDeadline(time.Now().Add(10 * time.Second))
	line, err := bufio.NewReader(c).ReadString('\n')
	if err != nil || !strings.HasPrefix(line, "220") {
		t.Fatalf("banner after thaw = %q, %v", line, err)
	}
	if err := p.Thaw(ctxT(t, 10*time.Second), app); err != nil {
		t.Fatalf("second thaw: %v", err)
	}
	if h, _ := p.Health(ctxT(t, 10*time.Second), app); !h.OK {
		t.Fatalf("health after thaw: %s", h.Detail)
	}
}

// The guard resumes the servers when hold elapses, without a Thaw (as if
// the plugin process had died).
func TestFreezeGuardThawsAfterHold(t *testing.T) {
	m := servers.StartMail(t)
	p := New()
	app := appFor(m)
	if _, err := p.Freeze(ctxT(t, 10*time.Second), app, 500*time.Millisecond); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = p.Thaw(context.Background(), app) })
	master := m.PostfixMasterPID()
	if st, _ := procState(master); st != 'T' {
		t.Fatalf("postfix master is %c after freeze, want T", st)
	}
	deadline := time.Now().Add(5 * time.Second)
	for {
		st, _ := procState(master)
		if st != 'T' {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("postfix still stopped 5 s after a hold of 500 ms")
		}
		time.Sleep(50 * time.Millisecond)
	}
	if h, _ := p.Health(ctxT(t, 10*time.Second), app); !h.OK {
		t.Fatalf("health after the guard thawed: %s", h.Detail)
	}
}

func TestFreezeNotRunning(t *testing.T) {
	p := New()
	dir := t.TempDir()
	app := sdk.App{Service: "s", Name: "a", Config: sdk.Config{"postfix_queue_directory": dir, "postfix_config_directory": dir, "dovecot_config": ""}}
	_, err := p.Freeze(ctxT(t, 5*time.Second), app, time.Second)
	if err == nil || !strings.Contains(err.Error(), "not running") {
		t.Fatalf("freeze of a stopped postfix = %v; want not running", err)
	}
	if err := p.Thaw(ctxT(t, 5*time.Second), app); err != nil {
		t.Fatalf("thaw of what never froze: %v", err)
	}
}

func TestStopStart(t *testing.T) {
	m := servers.StartMail(t)
	p := New()
	app := appFor(m)
	delete(app.Config, "dovecot_base_directory") // asked from doveconf
	sendOne(t, m)
	pf, dc := tree(m.PostfixMasterPID()), tree(m.DovecotMasterPID())
	if err := p.Stop(ctxT(t, 30*time.Second), app); err != nil {
		t.Fatal(err)
	}
	for _, pid := range append(pf, dc...) {
		if st, ok := procState(pid); ok && st != 'Z' {
			t.Errorf("process %d still there (%c) after stop", pid, st)
		}
	}
	if h, _ := p.Health(ctxT(t, 5*time.Second), app); h.OK {
		t.Fatal("healthy after stop")
	}
	if err := p.Stop(ctxT(t, 30*time.Second), app); err != nil {
		t.Fatalf("stop of a stopped server: %v", err)
	}
	if err := p.Start(ctxT(t, 30*time.Second), app); err != nil {
		t.Fatal(err)
	}
	if err := p.Start(ctxT(t, 30*time.Second), app); err != nil {
		t.Fatalf("start of a running server: %v", err)
	}
	if h, _ := p.Health(ctxT(t, 10*time.Second), app); !h.OK {
		t.Fatalf("health after start: %s", h.Detail)
	}
	sendOne(t, m)
}

func sendOne(t *testing.T, m *servers.Mail) {
	t.Helper()
	out, err := exec.Command("smtp-source", "-m", "1", "-f", "bob@"+servers.MailDomain, "-t", m.User, m.SMTPAddr).CombinedOutput()
	if err != nil {
		t.Fatalf("smtp-source: %v: %s", err, out)
	}
}

var queuedAs = regexp.MustCompile(`<<< 250 [0-9.]+ Ok: queued as ([0-9A-Za-z]+)`)

// acks collects the queue ids smtp-source got a 250 for.
type acks struct {
	mu  sync.Mutex
	ids []string
}

func (a *acks) snapshot() map[string]bool {
	a.mu.Lock()
	defer a.mu.Unlock()
	out := make(map[string]bool, len(a.ids))
	for _, id := range a.ids {
		out[id] = true
	}
	return out
}

// TestMarkersUnderLoad is the proof: the spools (Postfix's queue
// directory and the Maildirs) live on ext4 on a journaled Lockstep volume,
// attached through a real initiator, and smtp-source delivers while
// markers are taken as a policy with this plugin and fsfreeze takes them:
// mail quiesced, file system frozen, marker, thawed. Each marker's cut is
// then read back from a point-in-time clone of the volume, attached and
// mounted like any LUN: every message that got 250 before the marker is in
// it, in the queue or in the mailbox, and no message there is half-written.
func TestMarkersUnderLoad(t *testing.T) {
	testenv.Root(t)
	if err := chain.Available(); err != nil {
		testenv.Unavailable(t, "%v", err)
	}
	ctx := ctxT(t, 10*time.Minute)
	work, err := os.MkdirTemp("", "lsmailpit-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(work) })
	// virtual(8) and Dovecot run as nobody and must reach the Maildirs.
	if err := os.Chmod(work, 0o755); err != nil {
		t.Fatal(err)
	}
	st, err := store.Open(ctx, filepath.Join(work, "data"), store.Options{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	vol, err := st.CreateVolume(ctx, store.VolumeSpec{Name: "spool", Size: 512 << 20, BlockSize: 4096})
	if err != nil {
		t.Fatal(err)
	}
	const iqn = "iqn.2026-12.io.lockstep:mail.spool"
	ls := lunserver.Start(t, nil)
	ls.Add(t, iqn, vol)
	c := ls.Attach(ctx, t, iqn, filepath.Join(work, "chain"), 4096)
	if err := c.Mkfs(ctx); err != nil {
		t.Fatal(err)
	}
	mnt := filepath.Join(work, "mnt")
	if err := c.Mount(ctx, mnt); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { exec.Command("fsfreeze", "-u", mnt).Run() }) // before the unmount
	m := servers.StartMailAt(t, mnt)
	p := New()
	app := appFor(m)
	fs := fsfreeze.New()
	fsApp := sdk.App{Service: "mail", Name: "fs", Config: sdk.Config{"mountpoints": []string{mnt}, "state_directory": filepath.Join(work, "fsfreeze")}}

	const size = 20000
	src := exec.Command("smtp-source", "-v", "-s", "4", "-m", "100000", "-l", fmt.Sprint(size),
		"-f", "bob@"+servers.MailDomain, "-t", m.User, m.SMTPAddr)
	stderr, err := src.StderrPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := src.Start(); err != nil {
		t.Fatal(err)
	}
	stopLoad := func() { _ = src.Process.Kill(); _ = src.Wait() }
	t.Cleanup(stopLoad)
	var a acks
	go func() {
		sc := bufio.NewScanner(stderr)
		for sc.Scan() {
			if mm := queuedAs.FindStringSubmatch(sc.Text()); mm != nil {
				a.mu.Lock()
				a.ids = append(a.ids, mm[1])
				a.mu.Unlock()
			}
		}
	}()

	// Wait until mail flows: a marker before the first 250 proves nothing.
	for start := time.Now(); len(a.snapshot()) < 5; {
		if time.Since(start) > time.Minute {
			t.Fatal("smtp-source got no 250 within a minute")
		}
		time.Sleep(20 * time.Millisecond)
	}
	type cut struct {
		marker *store.Marker
		acked  map[string]bool
		ev     sdk.Evidence
	}
	var cuts []cut
	for i := 0; i < 6; i++ {
		time.Sleep(time.Duration(150+50*i) * time.Millisecond)
		ev, err := p.Freeze(ctxT(t, 10*time.Second), app, 30*time.Second)
		if err != nil {
			t.Fatalf("marker %d: %v", i, err)
		}
		if _, err := fs.Freeze(ctxT(t, 10*time.Second), fsApp, 30*time.Second); err != nil {
			_ = p.Thaw(ctxT(t, 10*time.Second), app)
			t.Fatalf("marker %d: fsfreeze: %v", i, err)
		}
		// While frozen no 250 can be sent; let the reader drain the pipe
		// so acked holds every 250 sent before the marker.
		time.Sleep(100 * time.Millisecond)
		acked := a.snapshot()
		mk, markErr := st.Mark(ctx, store.MarkSpec{Service: "mail", Class: store.ClassApp, Volumes: []string{"spool"}})
		if err := fs.Thaw(ctxT(t, 10*time.Second), fsApp); err != nil {
			t.Fatal(err)
		}
		if err := p.Thaw(ctxT(t, 10*time.Second), app); err != nil {
			t.Fatal(err)
		}
		if markErr != nil {
			t.Fatalf("marker %d: %v", i, markErr)
		}
		cuts = append(cuts, cut{marker: mk, acked: acked, ev: ev})
	}
	stopLoad()

	var body []byte
	for i, ct := range cuts {
		clone, err := st.Clone(ctx, "spool", ct.marker.TS, fmt.Sprintf("spool-m%d", i))
		if err != nil {
			t.Fatal(err)
		}
		ciqn := fmt.Sprintf("%s-m%d", iqn, i)
		ls.Add(t, ciqn, clone)
		cc := ls.Attach(ctx, t, ciqn, filepath.Join(work, fmt.Sprintf("chain-m%d", i)), 4096)
		view := filepath.Join(work, fmt.Sprintf("m%d", i))
		if err := cc.Mount(ctx, view); err != nil {
			t.Fatalf("marker %d: mount its clone: %v", i, err)
		}
		inQueue, inBox := checkSnapshot(t, m, view, &body)
		missing := 0
		for id := range ct.acked {
			if !inQueue[id] && !inBox[id] {
				missing++
				t.Errorf("marker %d: message %s got 250 before the marker but is not in its point-in-time view", i, id)
			}
		}
		t.Logf("marker %d: %d acked, %d in queue, %d in mailbox, evidence %v", i, len(ct.acked), len(inQueue), len(inBox), ct.ev)
		if len(ct.acked) == 0 {
			t.Errorf("marker %d: no message acked yet; the load did not run", i)
		}
		if err := cc.Stop(); err != nil {
			t.Fatal(err)
		}
		if missing > 0 {
			t.FailNow()
		}
	}
}

var receivedID = regexp.MustCompile(`\(Postfix\) with E?SMTP id ([0-9A-Za-z]+)`)

// checkSnapshot checks every message file of a spool copy is complete and
// returns the queue ids found in the queue and in the mailboxes.
func checkSnapshot(t *testing.T, m *servers.Mail, snap string, body *[]byte) (inQueue, inBox map[string]bool) {
	t.Helper()
	inQueue, inBox = map[string]bool{}, map[string]bool{}
	for _, q := range []string{"maildrop", "incoming", "active", "deferred", "hold", "corrupt"} {
		_ = filepath.Walk(filepath.Join(snap, "spool", q), func(path string, fi os.FileInfo, err error) error {
			if err != nil || !fi.Mode().IsRegular() {
				return nil
			}
			if q == "corrupt" {
				t.Errorf("corrupt queue file %s", path)
			}
			if fi.Mode().Perm()&0o100 == 0 {
				t.Errorf("queue file %s is incomplete (mode %v): a message was being written at the cut", path, fi.Mode())
			}
			out, err := exec.Command("postcat", "-c", m.PostfixConfigDir, path).CombinedOutput()
			if err != nil || !bytes.Contains(out, []byte("*** MESSAGE FILE END ")) {
				t.Errorf("queue file %s does not read to its end: %v: %s", path, err, lastLines(out))
			}
			inQueue[fi.Name()] = true
			return nil
		})
	}
	_ = filepath.Walk(filepath.Join(snap, "vmail"), func(path string, fi os.FileInfo, err error) error {
		if err != nil || !fi.Mode().IsRegular() {
			return nil
		}
		switch dir := filepath.Base(filepath.Dir(path)); dir {
		case "tmp", "new", "cur":
			b, err := os.ReadFile(path)
			if err != nil {
				t.Error(err)
				return nil
			}
			msg, err := mail.ReadMessage(bytes.NewReader(b))
			if err != nil {
				t.Errorf("mailbox message %s does not parse: %v", path, err)
				return nil
			}
			var got bytes.Buffer
			_, _ = got.ReadFrom(msg.Body)
			if *body == nil {
				*body = got.Bytes()
			} else if !bytes.Equal(got.Bytes(), *body) {
				t.Errorf("mailbox message %s: body of %d bytes, others have %d", path, got.Len(), len(*body))
			}
			ids := receivedID.FindStringSubmatch(strings.Join(msg.Header["Received"], "\n"))
			if ids == nil {
				t.Errorf("mailbox message %s has no Postfix queue id", path)
				return nil
			}
			if dir != "tmp" {
				inBox[ids[1]] = true
			} else if !inQueue[ids[1]] {
				// A complete tmp/ file (the agent stopped between close
				// and link) is harmless while its queue file still lists
				// the recipient: the restored queue delivers it again.
				t.Errorf("maildir file %s in tmp/ whose message %s is not in the queue: it would be lost", path, ids[1])
			}
		}
		return nil
	})
	return inQueue, inBox
}

func lastLines(b []byte) string {
	s := strings.TrimSpace(string(b))
	if len(s) > 300 {
		s = s[len(s)-300:]
	}
	return s
}

func TestParseLocation(t *testing.T) {
	for _, c := range []struct{ loc, format, root string }{
		{"maildir:/var/vmail/%d/%n", "maildir", "/var/vmail"},
		{"maildir:~/Maildir", "maildir", ""},
		{"mbox:/var/mail/%u:INBOX=/var/mail/%u", "mbox", "/var/mail"},
		{"mdbox:/srv/mail/%u", "mdbox", "/srv/mail"},
	} {
		f, r, ok := parseLocation(c.loc)
		if !ok || f != c.format || r != c.root {
			t.Errorf("parseLocation(%q) = %q %q %v; want %q %q", c.loc, f, r, ok, c.format, c.root)
		}
	}
	if _, _, ok := parseLocation("/var/mail"); ok {
		t.Error("a location without format parsed")
	}
}

func TestValidate(t *testing.T) {
	dir := t.TempDir()
	app := sdk.App{Config: sdk.Config{
		"postfix_config_directory": dir,
		"postfix_queue_directory":  filepath.Join(dir, "nope"),
		"dovecot_config":           "",
		"dovecot_mail_location":    "/var/vmail",
		"smtp_address":             "localhost",
		"imap_address":             "127.0.0.1:143",
		"imap_user":                "u",
		"host":                     "elsewhere.example",
	}}
	diags, err := New().Validate(context.Background(), app)
	if err != nil {
		t.Fatal(err)
	}
	want := map[string]bool{"host": true, "postfix_config_directory": true, "postfix_queue_directory": true, "dovecot_mail_location": true, "smtp_address": true, "imap_password": true}
	for _, d := range diags {
		delete(want, d.Attribute)
	}
	if len(want) > 0 {
		t.Errorf("no diagnostic for %v; got %+v", want, diags)
	}
}

func TestInFlight(t *testing.T) {
	dir := t.TempDir()
	for _, d := range []string{"spool/incoming", "spool/active", "box/new", "box/cur", "box/tmp", "other/tmp"} {
		if err := os.MkdirAll(filepath.Join(dir, d), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	files := map[string]os.FileMode{
		"spool/incoming/A1": 0o600, // being written
		"spool/incoming/A2": 0o700, // complete
		"spool/active/A3":   0o700,
		"box/tmp/m1":        0o600,
		"box/new/m2":        0o600,
		"other/tmp/x":       0o600, // not a Maildir
	}
	for f, mode := range files {
		if err := os.WriteFile(filepath.Join(dir, f), nil, mode); err != nil {
			t.Fatal(err)
		}
		_ = os.Chmod(filepath.Join(dir, f), mode)
	}
	s := spool{queueDir: filepath.Join(dir, "spool")}
	for f, want := range map[string]bool{"spool/incoming/A1": true, "spool/incoming/A2": false, "spool/active/A3": false, "box/tmp/m1": true, "box/new/m2": false, "other/tmp/x": false} {
		if got := s.inFlight(filepath.Join(dir, f)); got != want {
			t.Errorf("inFlight(%s) = %v, want %v", f, got, want)
		}
	}
}

// A message that stays half-written (a client stalls in DATA) leaves no
// quiet instant: Freeze fails after drain_timeout and leaves the server
// running, and the client's message then completes.
func TestFreezeFailsWhileMessageHalfWritten(t *testing.T) {
	m := servers.StartMail(t)
	p := New()
	app := appFor(m)
	app.Config["drain_timeout"] = 700 * time.Millisecond

	c, err := net.Dial("tcp", m.SMTPAddr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(time.Minute))
	r := bufio.NewReader(c)
	expect := func(code string) {
		t.Helper()
		for {
			line, err := r.ReadString('\n')
			if err != nil || !strings.HasPrefix(line, code) {
				t.Fatalf("smtp: got %q, %v; want %s", line, err, code)
			}
			if len(line) < 4 || line[3] != '-' {
				return
			}
		}
	}
	expect("220")
	for _, step := range []struct{ cmd, code string }{
		{"HELO test", "250"}, {"MAIL FROM:<bob@" + servers.MailDomain + ">", "250"},
		{"RCPT TO:<" + m.User + ">", "250"}, {"DATA", "354"},
	} {
		fmt.Fprintf(c, "%s\r\n", step.cmd)
		expect(step.code)
	}
	fmt.Fprintf(c, "Subject: half\r\n\r\nthe first half\r\n")

	start := time.Now()
	_, err = p.Freeze(ctxT(t, 10*time.Second), app, 30*time.Second)
	if err == nil {
		_ = p.Thaw(context.Background(), app)
		t.Fatal("freeze succeeded while a message was being written")
	}
	if !strings.Contains(err.Error(), "incoming") || time.Since(start) > 5*time.Second {
		t.Fatalf("freeze error %v after %s; want the incoming queue file named, after drain_timeout", err, time.Since(start))
	}
	t.Log(err)
	for _, root := range []int{m.PostfixMasterPID(), m.DovecotMasterPID()} {
		for _, pid := range tree(root) {
			if st, ok := procState(pid); ok && st == 'T' {
				t.Errorf("process %d left stopped after a failed freeze", pid)
			}
		}
	}

	// A Thaw racing a Freeze (the SDK's watchdog does that to a Freeze
	// that hangs) ends it, and nothing stays stopped.
	app.Config["drain_timeout"] = 20 * time.Second
	done := make(chan error, 1)
	go func() {
		_, err := p.Freeze(ctxT(t, 30*time.Second), app, 30*time.Second)
		done <- err
	}()
	time.Sleep(300 * time.Millisecond)
	if err := p.Thaw(ctxT(t, 10*time.Second), app); err != nil {
		t.Fatal(err)
	}
	select {
	case err := <-done:
		if err == nil || !strings.Contains(err.Error(), "thawed while freezing") {
			t.Fatalf("freeze raced by thaw = %v; want thawed while freezing", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("freeze went on after a thaw")
	}
	for _, root := range []int{m.PostfixMasterPID(), m.DovecotMasterPID()} {
		for _, pid := range tree(root) {
			if st, ok := procState(pid); ok && st == 'T' {
				t.Errorf("process %d left stopped after a thaw raced a freeze", pid)
			}
		}
	}

	fmt.Fprintf(c, "the second half\r\n.\r\n")
	expect("250")
}
