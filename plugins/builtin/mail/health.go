package mail

import (
	"bufio"
	"context"
	"fmt"
	"net"
	"net/textproto"
	"strings"
	"time"
)

// dial opens a TCP connection that ends with ctx or after 10 s.
func dial(ctx context.Context, addr string) (net.Conn, error) {
	var d net.Dialer
	c, err := d.DialContext(ctx, "tcp", addr)
	if err != nil {
		return nil, err
	}
	deadline, ok := ctx.Deadline()
	if !ok {
		deadline = time.Now().Add(10 * time.Second)
	}
	_ = c.SetDeadline(deadline)
	return c, nil
}

// checkSMTP reads the banner (220) and says QUIT.
func checkSMTP(ctx context.Context, addr string) (string, error) {
	c, err := dial(ctx, addr)
	if err != nil {
		return "", fmt.Errorf("smtp %s: %w", addr, err)
	}
	defer c.Close()
	tp := textproto.NewConn(c)
	_, msg, err := tp.ReadResponse(220)
	if err != nil {
		return "", fmt.Errorf("smtp %s: banner: %w", addr, err)
	}
	_ = tp.PrintfLine("QUIT")
	_, _, _ = tp.ReadResponse(221)
	return firstLine(msg), nil
}

// checkIMAP reads the greeting and, when user is set, logs in and out. The
// password is never part of an error: a server's reply is reported with it
// masked, in case a server echoes it.
func checkIMAP(ctx context.Context, addr, user, password string) error {
	c, err := dial(ctx, addr)
	if err != nil {
		return fmt.Errorf("imap %s: %w", addr, err)
	}
	defer c.Close()
	r := bufio.NewReader(c)
	greet, err := r.ReadString('\n')
	if err != nil {
		return fmt.Errorf("imap %s: greeting: %w", addr, err)
	}
	if !strings.HasPrefix(greet, "* OK") {
		return fmt.Errorf("imap %s: greeting %q, want \"* OK\"", addr, strings.TrimSpace(greet))
	}
	if user == "" {
		return nil
	}
	if _, err := fmt.Fprintf(c, "l1 LOGIN %s %s\r\n", quote(user), quote(password)); err != nil {
		return fmt.Errorf("imap %s: login: %w", addr, err)
	}
	for {
		line, err := r.ReadString('\n')
		if err != nil {
			return fmt.Errorf("imap %s: login as %q: %w", addr, user, err)
		}
		line = strings.TrimSpace(line)
		if !strings.HasPrefix(line, "l1 ") {
			continue // untagged data (capabilities)
		}
		if password != "" {
			line = strings.ReplaceAll(line, password, "***")
		}
		if !strings.HasPrefix(line, "l1 OK") {
			return fmt.Errorf("imap %s: login as %q refused: %s", addr, user, strings.TrimPrefix(line, "l1 "))
		}
		break
	}
	_, _ = fmt.Fprintf(c, "l2 LOGOUT\r\n")
	return nil
}

// quote makes an IMAP quoted string.
func quote(s string) string {
	return `"` + strings.NewReplacer(`\`, `\\`, `"`, `\"`).Replace(s) + `"`
}

func firstLine(s string) string {
	if i := strings.IndexByte(s, '\n'); i >= 0 {
		return s[:i]
	}
	return s
}
