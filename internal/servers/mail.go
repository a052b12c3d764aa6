package servers

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"net"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/lockstep-io/lockstep/internal/testenv"
)

// MailDomain is the domain a Mail instance delivers locally.
const MailDomain = "test.example"

// Mail is a private Postfix and Dovecot pair for tests: Postfix listens on
// a loopback port, delivers MailDomain to Maildirs under the instance's
// directory (virtual(8)), and Dovecot serves those Maildirs over IMAP on
// another loopback port. Neither touches /etc/postfix's instance or a
// running system service.
type Mail struct {
	Dir              string // configuration, sockets, logs (and the spools, unless StartMailAt)
	PostfixConfigDir string // main.cf and master.cf
	QueueDir         string // Postfix's queue_directory
	DataDir          string // Postfix's data_directory
	MailRoot         string // Maildirs: MailRoot/DOMAIN/USER/
	DovecotConfig    string // dovecot.conf
	DovecotBaseDir   string
	MailLocation     string // Dovecot's mail_location
	SMTPAddr         string // host:port
	IMAPAddr         string // host:port
	User             string // a mailbox (user@MailDomain) with IMAP login
	Password         string // User's IMAP password
	UID, GID         int    // owner of the Maildirs
}

// StartMail starts a private Postfix and Dovecot and stops both, with every
// process they started, when the test ends. It marks the test unavailable
// when the packages are missing or it does not run as root.
func StartMail(t testing.TB) *Mail {
	t.Helper()
	return StartMailAt(t, "")
}

// StartMailAt is StartMail with the spools on a file system the caller
// owns, such as ext4 on a Lockstep volume: Postfix's queue directory in
// spoolRoot/spool and the Maildirs in spoolRoot/vmail. Configuration,
// sockets and logs stay in a temp dir. The servers stop in t.Cleanup, so a
// file system holding spoolRoot must be torn down by cleanups registered
// before this call.
func StartMailAt(t testing.TB, spoolRoot string) *Mail {
	t.Helper()
	for _, b := range []string{"postfix", "postconf", "postcat", "dovecot", "doveconf", "smtp-source"} {
		testenv.LookPath(t, b)
	}
	testenv.Root(t)
	nobody, err := user.Lookup("nobody")
	if err != nil {
		testenv.Unavailable(t, "user nobody: %v", err)
	}
	dir, err := os.MkdirTemp("", "lockstep-mail-")
	if err != nil {
		t.Fatal(err)
	}
	// virtual(8) and Dovecot's mail processes run as nobody and must reach
	// the Maildirs.
	if err := os.Chmod(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	pw := make([]byte, 12)
	_, _ = rand.Read(pw)
	m := &Mail{
		Dir:              dir,
		PostfixConfigDir: filepath.Join(dir, "postfix"),
		QueueDir:         filepath.Join(dir, "spool"),
		DataDir:          filepath.Join(dir, "data"),
		MailRoot:         filepath.Join(dir, "vmail"),
		DovecotConfig:    filepath.Join(dir, "dovecot", "dovecot.conf"),
		DovecotBaseDir:   filepath.Join(dir, "dovecot-run"),
		SMTPAddr:         fmt.Sprintf("127.0.0.1:%d", freePort(t)),
		IMAPAddr:         fmt.Sprintf("127.0.0.1:%d", freePort(t)),
		User:             "alice@" + MailDomain,
		Password:         hex.EncodeToString(pw),
	}
	if spoolRoot != "" {
		if err := os.Chmod(spoolRoot, 0o755); err != nil {
			t.Fatal(err)
		}
		m.QueueDir, m.MailRoot = filepath.Join(spoolRoot, "spool"), filepath.Join(spoolRoot, "vmail")
	}
	m.MailLocation = "maildir:" + m.MailRoot + "/%d/%n"
	m.UID, _ = strconv.Atoi(nobody.Uid)
	m.GID, _ = strconv.Atoi(nobody.Gid)
	t.Cleanup(func() {
		if t.Failed() {
			for _, l := range []string{"postfix.log", "dovecot.log"} {
				if b, err := os.ReadFile(filepath.Join(dir, l)); err == nil {
					t.Logf("%s:\n%s", l, tail(b, 3000))
				}
			}
		}
		m.kill()
		_ = os.RemoveAll(dir)
	})
	if err := m.configure(); err != nil {
		t.Fatalf("mail server: %v", err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	if err := m.StartPostfix(ctx); err != nil {
		t.Fatalf("mail server: %v", err)
	}
	if err := m.StartDovecot(ctx); err != nil {
		t.Fatalf("mail server: %v", err)
	}
	return m
}

func freePort(t testing.TB) int {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port
}

func (m *Mail) configure() error {
	for _, d := range []string{m.PostfixConfigDir, m.QueueDir, m.DataDir, filepath.Dir(m.DovecotConfig), m.DovecotBaseDir} {
		if err := os.MkdirAll(d, 0o755); err != nil {
			return err
		}
	}
	if err := os.MkdirAll(m.MailRoot, 0o755); err != nil {
		return err
	}
	if err := os.Chown(m.MailRoot, m.UID, m.GID); err != nil {
		return err
	}
	postfixUser, err := user.Lookup("postfix")
	if err != nil {
		return err
	}
	uid, _ := strconv.Atoi(postfixUser.Uid)
	gid, _ := strconv.Atoi(postfixUser.Gid)
	if err := os.Chown(m.DataDir, uid, gid); err != nil {
		return err
	}
	smtpPort := m.SMTPAddr[strings.LastIndex(m.SMTPAddr, ":")+1:]
	mainCF := fmt.Sprintf(`compatibility_level = 3.6
queue_directory = %[1]s
data_directory = %[2]s
meta_directory = /etc/postfix
command_directory = /usr/sbin
daemon_directory = /usr/lib/postfix/sbin
shlib_directory = /usr/lib/postfix
mail_owner = postfix
setgid_group = postdrop
myhostname = mx.%[3]s
mydomain = %[3]s
mydestination =
inet_interfaces = loopback-only
inet_protocols = ipv4
mynetworks = 127.0.0.0/8
smtpd_banner = $myhostname ESMTP lockstep-test
biff = no
append_dot_mydomain = no
alias_maps =
alias_database =
local_transport = error:local delivery disabled
virtual_mailbox_domains = %[3]s
virtual_mailbox_base = %[4]s
virtual_mailbox_maps = texthash:%[5]s/vmailbox
virtual_minimum_uid = 1
virtual_uid_maps = static:%[6]d
virtual_gid_maps = static:%[7]d
smtpd_recipient_restrictions = permit_mynetworks, reject_unauth_destination
maillog_file = %[8]s/postfix.log
maillog_file_prefixes = %[8]s
`, m.QueueDir, m.DataDir, MailDomain, m.MailRoot, m.PostfixConfigDir, m.UID, m.GID, m.Dir)
	masterCF := fmt.Sprintf(`127.0.0.1:%s inet n - n - - smtpd
pickup    unix  n       -       n       60      1       pickup
cleanup   unix  n       -       n       -       0       cleanup
qmgr      unix  n       -       n       300     1       qmgr
rewrite   unix  -       -       n       -       -       trivial-rewrite
bounce    unix  -       -       n       -       0       bounce
defer     unix  -       -       n       -       0       bounce
trace     unix  -       -       n       -       0       bounce
verify    unix  -       -       n       -       1       verify
flush     unix  n       -       n       1000?   0       flush
proxymap  unix  -       -       n       -       -       proxymap
smtp      unix  -       -       n       -       -       smtp
relay     unix  -       -       n       -       -       smtp
showq     unix  n       -       n       -       -       showq
error     unix  -       -       n       -       -       error
retry     unix  -       -       n       -       -       error
discard   unix  -       -       n       -       -       discard
local     unix  -       n       n       -       -       local
virtual   unix  -       n       n       -       -       virtual
lmtp      unix  -       -       n       -       -       lmtp
anvil     unix  -       -       n       -       1       anvil
scache    unix  -       -       n       -       1       scache
postlog   unix-dgram n  -       n       -       1       postlogd
`, smtpPort)
	vmailbox := fmt.Sprintf("%s %s/%s/\n", m.User, MailDomain, strings.TrimSuffix(m.User, "@"+MailDomain))
	imapPort := m.IMAPAddr[strings.LastIndex(m.IMAPAddr, ":")+1:]
	dovecotConf := fmt.Sprintf(`base_dir = %[1]s
state_dir = %[1]s/state
instance_name = lockstep-test-%[2]s
log_path = %[3]s/dovecot.log
protocols = imap
listen = 127.0.0.1
ssl = no
disable_plaintext_auth = no
auth_mechanisms = plain
first_valid_uid = 1
first_valid_gid = 1
mail_location = %[4]s
passdb {
  driver = passwd-file
  args = scheme=PLAIN %[5]s/users
}
userdb {
  driver = static
  args = uid=%[6]d gid=%[7]d home=%[8]s/%%d/%%n
}
service imap-login {
  inet_listener imap {
    address = 127.0.0.1
    port = %[9]s
  }
  inet_listener imaps {
    port = 0
  }
}
service stats {
  inet_listener http {
    port = 0
  }
}
`, m.DovecotBaseDir, filepath.Base(m.Dir), m.Dir, m.MailLocation, filepath.Dir(m.DovecotConfig), m.UID, m.GID, m.MailRoot, imapPort)
	users := fmt.Sprintf("%s:%s\n", m.User, m.Password)
	for _, f := range []struct {
		path, body string
		mode       os.FileMode
	}{
		{filepath.Join(m.PostfixConfigDir, "main.cf"), mainCF, 0o644},
		{filepath.Join(m.PostfixConfigDir, "master.cf"), masterCF, 0o644},
		{filepath.Join(m.PostfixConfigDir, "vmailbox"), vmailbox, 0o644},
		{m.DovecotConfig, dovecotConf, 0o644},
		{filepath.Join(filepath.Dir(m.DovecotConfig), "users"), users, 0o640},
	} {
		if err := os.WriteFile(f.path, []byte(f.body), f.mode); err != nil {
			return err
		}
	}
	dovecotGroup, err := user.LookupGroup("dovecot")
	if err != nil {
		return err
	}
	dgid, _ := strconv.Atoi(dovecotGroup.Gid)
	return os.Chown(filepath.Join(filepath.Dir(m.DovecotConfig), "users"), 0, dgid)
}

// StartPostfix starts the Postfix instance and waits for its banner.
func (m *Mail) StartPostfix(ctx context.Context) error {
	if err := runDaemon(ctx, "postfix", "-c", m.PostfixConfigDir, "start"); err != nil {
		return err
	}
	return waitListen(ctx, m.SMTPAddr)
}

// StartDovecot starts the Dovecot instance and waits for its IMAP port.
func (m *Mail) StartDovecot(ctx context.Context) error {
	if err := runDaemon(ctx, "dovecot", "-c", m.DovecotConfig); err != nil {
		return err
	}
	if err := waitListen(ctx, m.IMAPAddr); err != nil {
		return err
	}
	// Dovecot writes master.pid only after it listens.
	for m.DovecotMasterPID() == 0 {
		select {
		case <-ctx.Done():
			return fmt.Errorf("dovecot wrote no master.pid: %w", ctx.Err())
		case <-time.After(20 * time.Millisecond):
		}
	}
	return nil
}

// runDaemon runs a command that starts a daemon. Its output goes to a file:
// a daemon keeping its parent's stdout would hold a pipe open forever.
func runDaemon(ctx context.Context, name string, args ...string) error {
	f, err := os.CreateTemp("", "lockstep-mail-out-")
	if err != nil {
		return err
	}
	defer os.Remove(f.Name())
	defer f.Close()
	cmd := exec.CommandContext(ctx, name, args...)
	cmd.Stdout, cmd.Stderr = f, f
	if err := cmd.Run(); err != nil {
		out, _ := os.ReadFile(f.Name())
		return fmt.Errorf("%s %s: %w: %s (Postfix logs to the instance's postfix.log)", name, strings.Join(args, " "), err, out)
	}
	return nil
}

func waitListen(ctx context.Context, addr string) error {
	for {
		c, err := net.DialTimeout("tcp", addr, time.Second)
		if err == nil {
			c.Close()
			return nil
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("waiting for %s: %w", addr, err)
		case <-time.After(50 * time.Millisecond):
		}
	}
}

// PostfixMasterPID and DovecotMasterPID read the masters' pid files; 0
// when not running.
func (m *Mail) PostfixMasterPID() int {
	return readPID(filepath.Join(m.QueueDir, "pid", "master.pid"))
}

// DovecotMasterPID is PostfixMasterPID for Dovecot.
func (m *Mail) DovecotMasterPID() int {
	return readPID(filepath.Join(m.DovecotBaseDir, "master.pid"))
}

func readPID(path string) int {
	b, err := os.ReadFile(path)
	if err != nil {
		return 0
	}
	pid, _ := strconv.Atoi(strings.TrimSpace(string(b)))
	if pid <= 0 || syscall.Kill(pid, 0) != nil {
		return 0
	}
	return pid
}

// kill stops both servers and every process they started, also processes
// a test left stopped (SIGSTOP).
func (m *Mail) kill() {
	// A master that has not yet written its pid file is found by its
	// command line, which names this instance's private directory.
	masters := append([]int{m.PostfixMasterPID(), m.DovecotMasterPID()}, m.byCommandLine()...)
	var pids []int
	for _, p := range masters {
		if p > 0 {
			pids = append(pids, p)
			pids = append(pids, descendants(p)...)
		}
	}
	for _, p := range pids {
		_ = syscall.Kill(p, syscall.SIGCONT)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	_ = exec.CommandContext(ctx, "postfix", "-c", m.PostfixConfigDir, "stop").Run()
	if p := m.DovecotMasterPID(); p > 0 {
		_ = syscall.Kill(p, syscall.SIGTERM)
	}
	deadline := time.Now().Add(10 * time.Second)
	for time.Now().Before(deadline) {
		alive := 0
		for _, p := range pids {
			if syscall.Kill(p, 0) == nil && !zombie(p) {
				alive++
			}
		}
		if alive == 0 {
			return
		}
		time.Sleep(50 * time.Millisecond)
	}
	for _, p := range pids {
		_ = syscall.Kill(p, syscall.SIGKILL)
	}
}

// descendants lists the processes below pid, from /proc.
func descendants(pid int) []int {
	entries, _ := os.ReadDir("/proc")
	parent := map[int]int{}
	for _, e := range entries {
		p, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		b, err := os.ReadFile(filepath.Join("/proc", e.Name(), "stat"))
		if err != nil {
			continue
		}
		s := string(b)
		i := strings.LastIndexByte(s, ')')
		if i < 0 {
			continue
		}
		f := strings.Fields(s[i+1:])
		if len(f) < 2 {
			continue
		}
		pp, _ := strconv.Atoi(f[1])
		parent[p] = pp
	}
	var out []int
	want := map[int]bool{pid: true}
	for changed := true; changed; {
		changed = false
		for p, pp := range parent {
			if want[pp] && !want[p] {
				want[p] = true
				out = append(out, p)
				changed = true
			}
		}
	}
	return out
}

func zombie(pid int) bool {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return true
	}
	s := string(b)
	i := strings.LastIndexByte(s, ')')
	return i >= 0 && len(s) > i+2 && s[i+2] == 'Z'
}

func tail(b []byte, n int) []byte {
	if len(b) > n {
		return b[len(b)-n:]
	}
	return b
}

// byCommandLine lists the processes whose command line names m.Dir.
func (m *Mail) byCommandLine() []int {
	var out []int
	entries, _ := os.ReadDir("/proc")
	for _, e := range entries {
		pid, err := strconv.Atoi(e.Name())
		if err != nil || pid == os.Getpid() {
			continue
		}
		b, err := os.ReadFile(filepath.Join("/proc", e.Name(), "cmdline"))
		if err == nil && strings.Contains(string(b), m.Dir+"/") {
			out = append(out, pid)
		}
	}
	return out
}
