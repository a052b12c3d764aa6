package exec

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	osexec "os/exec"
	"strings"
	"syscall"
	"time"
)

// Cmd is one command to run without a shell.
type Cmd struct {
	Argv    []string
	Env     []string      // added to the daemon's environment
	Dir     string        // working directory; "" is "/"
	Timeout time.Duration // 0: only the context's deadline
}

// Result is what a finished command left behind.
type Result struct {
	ExitStatus int    // -1 when killed by a signal or never started
	Stdout     []byte // at most MaxOutput bytes
	Stderr     []byte // at most MaxOutput bytes
}

// MaxOutput bounds what is kept of a command's stdout and stderr.
const MaxOutput = 64 << 10

// tail is how much of stderr goes into an error message.
const tail = 1024

// Run runs c and waits for it. The command runs in its own process group,
// which is killed (SIGKILL) when the timeout or the context's deadline
// passes, so a hung hook cannot outlive its deadline through its children.
// A command that exits non-zero, cannot start or is killed is an error that
// holds the end of its stderr.
func Run(ctx context.Context, c Cmd) (Result, error) {
	res := Result{ExitStatus: -1}
	if len(c.Argv) == 0 || c.Argv[0] == "" {
		return res, errors.New("exec: empty command")
	}
	if c.Timeout > 0 {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, c.Timeout)
		defer cancel()
	}
	cmd := osexec.CommandContext(ctx, c.Argv[0], c.Argv[1:]...)
	cmd.Env = append(os.Environ(), c.Env...)
	cmd.Dir = c.Dir
	if cmd.Dir == "" {
		cmd.Dir = "/"
	}
	cmd.Stdin = nil
	var stdout, stderr capped
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	cmd.Cancel = func() error {
		// The whole group: a shell script's children die with it.
		return syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL)
	}
	// A grandchild that escaped the group and holds the pipes must not
	// keep Run waiting past the deadline.
	cmd.WaitDelay = 2 * time.Second

	start := time.Now()
	err := cmd.Run()
	res.Stdout, res.Stderr = stdout.Bytes(), stderr.Bytes()
	if cmd.ProcessState != nil {
		res.ExitStatus = cmd.ProcessState.ExitCode()
	}
	if err == nil || (errors.Is(err, osexec.ErrWaitDelay) && res.ExitStatus == 0) {
		// ErrWaitDelay with status 0: a start command left a daemon
		// holding its stdout; the command itself succeeded.
		return res, nil
	}
	name := fmt.Sprintf("%q", strings.Join(c.Argv, " "))
	if ctx.Err() != nil {
		return res, fmt.Errorf("exec: %s killed after %s: %w%s", name, time.Since(start).Round(time.Millisecond), ctx.Err(), stderrTail(res.Stderr))
	}
	var exit *osexec.ExitError
	if errors.As(err, &exit) {
		return res, fmt.Errorf("exec: %s exited with status %d%s", name, res.ExitStatus, stderrTail(res.Stderr))
	}
	return res, fmt.Errorf("exec: %s: %w", name, err)
}

func stderrTail(b []byte) string {
	s := strings.TrimSpace(string(b))
	if s == "" {
		return ""
	}
	return ": " + Truncate(s, tail)
}

// Truncate shortens s to at most n bytes, keeping the end (where a
// command's reason for failing usually is), and marks the cut.
func Truncate(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return "…" + strings.ToValidUTF8(s[len(s)-n:], "")
}

// capped is a bytes.Buffer that drops what goes past MaxOutput, so a
// chatty command cannot exhaust memory; writes never fail, so the command
// is never killed by SIGPIPE for talking too much.
type capped struct{ bytes.Buffer }

func (c *capped) Write(p []byte) (int, error) {
	if room := MaxOutput - c.Len(); room > 0 {
		if len(p) > room {
			c.Buffer.Write(p[:room])
		} else {
			c.Buffer.Write(p)
		}
	}
	return len(p), nil
}
