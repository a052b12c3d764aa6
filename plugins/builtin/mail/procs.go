package mail

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// procRoot is where process information is read; a variable for tests.
var procRoot = "/proc"

// readPIDFile returns the live process named in a pid file, or 0.
func readPIDFile(path string) int {
	b, err := os.ReadFile(path)
	if err != nil {
		return 0
	}
	pid, err := strconv.Atoi(strings.TrimSpace(string(b)))
	if err != nil || pid <= 0 {
		return 0
	}
	if st, ok := procState(pid); !ok || st == 'Z' {
		return 0
	}
	return pid
}

// procStat returns a process's state letter and parent, ok false when it
// is gone.
func procStat(pid int) (state byte, ppid int, ok bool) {
	b, err := os.ReadFile(filepath.Join(procRoot, strconv.Itoa(pid), "stat"))
	if err != nil {
		return 0, 0, false
	}
	s := string(b)
	i := strings.LastIndexByte(s, ')')
	if i < 0 {
		return 0, 0, false
	}
	f := strings.Fields(s[i+1:])
	if len(f) < 2 {
		return 0, 0, false
	}
	ppid, _ = strconv.Atoi(f[1])
	return f[0][0], ppid, true
}

func procState(pid int) (byte, bool) {
	st, _, ok := procStat(pid)
	return st, ok
}

// children maps each live process to its children.
func children() map[int][]int {
	out := map[int][]int{}
	entries, _ := os.ReadDir(procRoot)
	for _, e := range entries {
		pid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		st, ppid, ok := procStat(pid)
		if !ok || st == 'Z' {
			continue
		}
		out[ppid] = append(out[ppid], pid)
	}
	return out
}

// tree lists root and every live process below it, root first.
func tree(root int) []int {
	kids := children()
	out := []int{root}
	for i := 0; i < len(out); i++ {
		out = append(out, kids[out[i]]...)
	}
	return out
}

// stopTrees stops the process trees under roots with SIGSTOP and returns
// every process stopped, once each has really stopped. A master is stopped
// first so it forks no new child; the tree is walked again until no new
// process appears.
func stopTrees(ctx context.Context, roots []int) ([]int, error) {
	stopped := map[int]bool{}
	var order []int
	for {
		added := false
		for _, r := range roots {
			for _, pid := range tree(r) {
				if stopped[pid] {
					continue
				}
				if err := syscall.Kill(pid, syscall.SIGSTOP); err != nil {
					if errors.Is(err, syscall.ESRCH) {
						continue
					}
					return order, fmt.Errorf("stop process %d: %w", pid, err)
				}
				stopped[pid] = true
				order = append(order, pid)
				added = true
			}
		}
		if err := waitStopped(ctx, order); err != nil {
			return order, err
		}
		if !added {
			return order, nil
		}
	}
}

// waitStopped waits until every process is stopped (or gone): a process in
// a system call stops when the call returns, so its writes are finished.
func waitStopped(ctx context.Context, pids []int) error {
	for _, pid := range pids {
		for {
			st, ok := procState(pid)
			if !ok || st == 'T' || st == 't' || st == 'Z' || st == 'X' {
				break
			}
			select {
			case <-ctx.Done():
				return fmt.Errorf("process %d did not stop (state %c): %w", pid, st, ctx.Err())
			case <-time.After(time.Millisecond):
			}
		}
	}
	return nil
}

// cont resumes processes, last stopped first, so that masters resume after
// their children.
func cont(pids []int) {
	for i := len(pids) - 1; i >= 0; i-- {
		_ = syscall.Kill(pids[i], syscall.SIGCONT)
	}
}

// finishWait bounds how long letFinish lets writers run alone. A writer
// that sleeps (state S) for idleWait without finishing waits for a stopped
// peer (cleanup for its smtpd) and is given up on sooner; one in disk sleep
// (state D, an fsync on slow storage) is waited for.
const (
	finishWait = time.Second
	idleWait   = 5 * time.Millisecond
)

// letFinish resumes only the processes of busy, waits up to wait until none
// of them holds a message being written, and stops them again. It returns
// how many processes finished, and false when one did not (or they could
// not be stopped again).
func letFinish(ctx context.Context, sp spool, busy []writer, wait time.Duration) (int, bool) {
	var pids []int
	seen := map[int]bool{}
	for _, w := range busy {
		if !seen[w.PID] {
			seen[w.PID] = true
			pids = append(pids, w.PID)
		}
	}
	cont(pids)
	deadline := time.Now().Add(wait)
	done := false
	var idleSince time.Time
	for time.Now().Before(deadline) && ctx.Err() == nil {
		if done = sp.settled(busy, pids); done {
			break
		}
		if allSleeping(pids) {
			if idleSince.IsZero() {
				idleSince = time.Now()
			} else if time.Since(idleSince) > idleWait {
				break
			}
		} else {
			idleSince = time.Time{}
		}
		time.Sleep(500 * time.Microsecond)
	}
	for _, pid := range pids {
		_ = syscall.Kill(pid, syscall.SIGSTOP)
	}
	if err := waitStopped(ctx, pids); err != nil {
		return 0, false
	}
	return len(pids), done
}

// allSleeping reports whether every process is in interruptible sleep.
func allSleeping(pids []int) bool {
	for _, pid := range pids {
		if st, ok := procState(pid); ok && st != 'S' {
			return false
		}
	}
	return true
}

// spool says which open files are a message being written.
type spool struct {
	queueDir string // Postfix queue_directory
	mboxRoot string // non-Maildir mail root, "" when Maildir or unknown
}

// writer is a process holding a file of the spool open for writing.
type writer struct {
	PID  int
	Path string
}

func (w writer) String() string {
	comm, _ := os.ReadFile(filepath.Join(procRoot, strconv.Itoa(w.PID), "comm"))
	return fmt.Sprintf("process %d (%s) writes %s", w.PID, strings.TrimSpace(string(comm)), w.Path)
}

// writers lists the processes among pids that hold a message being written
// open for writing: an incomplete Postfix queue file (incoming/ or
// maildrop/, not yet marked complete by its owner-execute bit), a file in
// a Maildir's tmp/, or a mailbox file of a non-Maildir store.
//
// A delivery agent stopped after closing its tmp/ file and before linking
// it into new/ is not one: the file is complete and fsynced, and the queue
// file still lists the recipient as undelivered, so a restored cut
// delivers the message again and the tmp/ file is left for Dovecot's
// cleanup, as after a crash at that instant.
func (s spool) writers(pids []int) []writer {
	var out []writer
	for _, pid := range pids {
		dir := filepath.Join(procRoot, strconv.Itoa(pid), "fd")
		fds, err := os.ReadDir(dir)
		if err != nil {
			continue
		}
		for _, fd := range fds {
			path, err := os.Readlink(filepath.Join(dir, fd.Name()))
			if err != nil || !strings.HasPrefix(path, "/") || strings.HasSuffix(path, " (deleted)") {
				continue
			}
			if writable(pid, fd.Name()) && s.inFlight(path) {
				out = append(out, writer{PID: pid, Path: path})
			}
		}
	}
	sort.Slice(out, func(i, j int) bool { return out[i].PID < out[j].PID })
	return out
}

// writable reports whether a process's fd is open for writing.
func writable(pid int, fd string) bool {
	b, err := os.ReadFile(filepath.Join(procRoot, strconv.Itoa(pid), "fdinfo", fd))
	if err != nil {
		return false
	}
	for _, line := range strings.Split(string(b), "\n") {
		if v, ok := strings.CutPrefix(line, "flags:"); ok {
			flags, err := strconv.ParseUint(strings.TrimSpace(v), 8, 64)
			return err == nil && flags&(syscall.O_WRONLY|syscall.O_RDWR) != 0
		}
	}
	return false
}

// settled reports whether every message the writers were writing is
// finished: no longer held by its writer and, unless it is a mailbox file
// appended to in place, no longer in flight by its path. A Maildir
// delivery closes its tmp/ file before it links it into new/; the closed
// file still in tmp/ is not finished. pids are the writers' processes.
func (s spool) settled(ws []writer, pids []int) bool {
	held := map[writer]bool{}
	for _, w := range s.writers(pids) {
		held[w] = true
	}
	for _, w := range ws {
		if held[w] || !(s.mboxRoot != "" && within(w.Path, s.mboxRoot)) && s.inFlight(w.Path) {
			return false
		}
	}
	return true
}

func (s spool) inFlight(path string) bool {
	fi, err := os.Stat(path)
	if err != nil || !fi.Mode().IsRegular() {
		return false
	}
	if s.queueDir != "" {
		for _, q := range []string{"incoming", "maildrop"} {
			if within(path, filepath.Join(s.queueDir, q)) {
				return fi.Mode().Perm()&0o100 == 0
			}
		}
	}
	parent := filepath.Dir(path)
	if filepath.Base(parent) == "tmp" {
		if st, err := os.Stat(filepath.Join(filepath.Dir(parent), "new")); err == nil && st.IsDir() {
			return true
		}
	}
	if s.mboxRoot != "" && within(path, s.mboxRoot) && !strings.HasPrefix(filepath.Base(path), "dovecot") {
		return true
	}
	return false
}

func within(path, dir string) bool {
	rel, err := filepath.Rel(dir, path)
	return err == nil && rel != "." && !strings.HasPrefix(rel, "..")
}
