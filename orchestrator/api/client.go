package api

import (
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"time"
)

// DefaultDataDir is where the CLI looks for the token when neither --data
// nor LOCKSTEP_DATA nor LOCKSTEP_TOKEN is given (the systemd unit's data
// directory).
const DefaultDataDir = "/var/lib/lockstep"

// ErrUnreachable wraps errors of a daemon that could not be reached.
var ErrUnreachable = errors.New("api: daemon not reachable")

// ErrUnauthorized is a 401 reply: the token is missing or wrong.
var ErrUnauthorized = errors.New("api: token refused")

// Client calls a daemon's API. It is safe for concurrent use.
type Client struct {
	addr   string
	token  string
	scheme string // http or https
	hc     *http.Client
}

// CAFile is where, in the daemon's data directory, the certificate of the
// CA that signs its HTTPS API (and its agents) lives.
const CAFile = "pki/ca.crt"

// Locate finds the daemon and its token the way every CLI command does.
// The address is addr (--addr / LOCKSTEP_ADDR), else the api.addr file the
// daemon writes into dataDir, else DefaultAddr. The token is token
// (LOCKSTEP_TOKEN), else dataDir's api.token. An empty dataDir means
// DefaultDataDir.
func Locate(addr, token, dataDir string) (*Client, error) {
	if dataDir == "" {
		dataDir = DefaultDataDir
	}
	if addr == "" {
		if b, err := os.ReadFile(filepath.Join(dataDir, AddrFile)); err == nil {
			addr = strings.TrimSpace(string(b))
		}
	}
	if addr == "" {
		addr = DefaultAddr
	}
	if token == "" {
		path := filepath.Join(dataDir, TokenFile)
		t, err := ReadToken(path)
		if errors.Is(err, os.ErrNotExist) {
			return nil, fmt.Errorf("no API token: %s does not exist; give the daemon's data directory with --data (env LOCKSTEP_DATA) or set LOCKSTEP_TOKEN", path)
		}
		if err != nil {
			return nil, err
		}
		token = t
	}
	if rest, ok := strings.CutPrefix(addr, "https://"); ok {
		caPath := os.Getenv("LOCKSTEP_CA")
		if caPath == "" {
			caPath = filepath.Join(dataDir, CAFile)
		}
		ca, err := os.ReadFile(caPath)
		if err != nil {
			return nil, fmt.Errorf("the daemon at %s serves HTTPS: its CA certificate: %w (copy DATA/%s from the daemon's machine and set LOCKSTEP_CA)", rest, err, CAFile)
		}
		return NewTLS(rest, token, ca)
	}
	return New(strings.TrimPrefix(addr, "http://"), token), nil
}

// New returns a client for the daemon at addr (host:port) using token,
// over plain HTTP.
func New(addr, token string) *Client {
	return &Client{addr: addr, token: token, scheme: "http", hc: &http.Client{Timeout: 2 * time.Minute}}
}

// NewTLS returns a client for the daemon at addr (host:port) over HTTPS,
// trusting only the CA certificates in caPEM.
func NewTLS(addr, token string, caPEM []byte) (*Client, error) {
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(caPEM) {
		return nil, errors.New("api: no CA certificate in the CA file")
	}
	tr := http.DefaultTransport.(*http.Transport).Clone()
	tr.TLSClientConfig = &tls.Config{RootCAs: pool, MinVersion: tls.VersionTLS12}
	return &Client{addr: addr, token: token, scheme: "https", hc: &http.Client{Timeout: 2 * time.Minute, Transport: tr}}, nil
}

// Addr is the daemon's address.
func (c *Client) Addr() string { return c.addr }

// Do calls method on path with in as the JSON body (nil for none) and
// decodes the reply into out (nil to discard it).
func (c *Client) Do(ctx context.Context, method, path string, in, out any) error {
	resp, err := c.send(ctx, c.hc, method, path, in)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	if out == nil {
		return nil
	}
	if err := json.NewDecoder(resp.Body).Decode(out); err != nil {
		return fmt.Errorf("daemon at %s: bad reply to %s %s: %w", c.addr, method, path, err)
	}
	return nil
}

// send calls method on path with hc and returns a 2xx reply, whose body
// the caller closes; any other reply is turned into an error.
func (c *Client) send(ctx context.Context, hc *http.Client, method, path string, in any) (*http.Response, error) {
	var body io.Reader
	if in != nil {
		b, err := json.Marshal(in)
		if err != nil {
			return nil, err
		}
		body = bytes.NewReader(b)
	}
	req, err := http.NewRequestWithContext(ctx, method, c.scheme+"://"+c.addr+path, body)
	if err != nil {
		return nil, err
	}
	req.Header.Set("Authorization", "Bearer "+c.token)
	if in != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	resp, err := hc.Do(req)
	if err != nil {
		var ne net.Error
		if errors.As(err, &ne) || errors.Is(err, context.DeadlineExceeded) || strings.Contains(err.Error(), "connect") {
			return nil, &userError{msg: fmt.Sprintf("daemon not reachable at %s: is `lockstep serve` running? (%v)", c.addr, unwrapURL(err)), is: ErrUnreachable}
		}
		return nil, fmt.Errorf("daemon at %s: %w", c.addr, err)
	}
	if resp.StatusCode == http.StatusUnauthorized {
		resp.Body.Close()
		return nil, &userError{msg: fmt.Sprintf("the daemon at %s refused the API token: use the token of its data directory (--data DIR, LOCKSTEP_DATA or LOCKSTEP_TOKEN)", c.addr), is: ErrUnauthorized}
	}
	if resp.StatusCode/100 != 2 {
		defer resp.Body.Close()
		var ae Error
		if err := json.NewDecoder(io.LimitReader(resp.Body, 1<<20)).Decode(&ae); err != nil || ae.Error == "" {
			return nil, fmt.Errorf("daemon at %s: %s", c.addr, resp.Status)
		}
		return nil, &RemoteError{Status: resp.StatusCode, Msg: ae.Error}
	}
	return resp, nil
}

func unwrapURL(err error) error {
	var ue *url.Error
	if errors.As(err, &ue) {
		return ue.Err
	}
	return err
}

// userError reads as msg and matches the sentinel is.
type userError struct {
	msg string
	is  error
}

func (e *userError) Error() string        { return e.msg }
func (e *userError) Is(target error) bool { return target == e.is }

// RemoteError is an error the daemon reported.
type RemoteError struct {
	Status int
	Msg    string
}

func (e *RemoteError) Error() string { return e.Msg }

// NotFound reports whether err is the daemon saying an object does not exist.
func NotFound(err error) bool {
	var re *RemoteError
	return errors.As(err, &re) && re.Status == http.StatusNotFound
}

// Status returns the daemon's status.
func (c *Client) Status(ctx context.Context) (Status, error) {
	var s Status
	return s, c.Do(ctx, "GET", "/v1/status", nil, &s)
}

// Services lists the protected services.
func (c *Client) Services(ctx context.Context) ([]Service, error) {
	var s []Service
	return s, c.Do(ctx, "GET", "/v1/services", nil, &s)
}

// Markers lists the markers of service taken at or after since (zero: all).
func (c *Client) Markers(ctx context.Context, service string, since time.Time) ([]Marker, error) {
	q := ""
	if !since.IsZero() {
		q = "?since=" + url.QueryEscape(since.UTC().Format(time.RFC3339Nano))
	}
	var m []Marker
	return m, c.Do(ctx, "GET", "/v1/services/"+url.PathEscape(service)+"/markers"+q, nil, &m)
}

// Mark takes a marker of service now and returns it.
func (c *Client) Mark(ctx context.Context, service string) (Marker, error) {
	var m Marker
	return m, c.Do(ctx, "POST", "/v1/services/"+url.PathEscape(service)+"/mark", nil, &m)
}

// Events lists events at or after since (zero: the newest ones kept).
func (c *Client) Events(ctx context.Context, service string, since time.Time) ([]Event, error) {
	v := url.Values{}
	if service != "" {
		v.Set("service", service)
	}
	if !since.IsZero() {
		v.Set("since", since.UTC().Format(time.RFC3339Nano))
	}
	q := ""
	if len(v) > 0 {
		q = "?" + v.Encode()
	}
	var e []Event
	return e, c.Do(ctx, "GET", "/v1/events"+q, nil, &e)
}

// Volumes lists the volumes of the data directory.
func (c *Client) Volumes(ctx context.Context) ([]VolumeStatus, error) {
	var v []VolumeStatus
	return v, c.Do(ctx, "GET", "/v1/volumes", nil, &v)
}

// Exposures lists the live point-in-time exposures.
func (c *Client) Exposures(ctx context.Context) ([]Exposure, error) {
	var e []Exposure
	return e, c.Do(ctx, "GET", "/v1/exposures", nil, &e)
}

// Expose presents a volume at a point in time as a new target.
func (c *Client) Expose(ctx context.Context, req ExposeRequest) (Exposure, error) {
	var e Exposure
	return e, c.Do(ctx, "POST", "/v1/expose", req, &e)
}

// Unexpose removes an exposure.
func (c *Client) Unexpose(ctx context.Context, req UnexposeRequest) error {
	return c.Do(ctx, "POST", "/v1/unexpose", req, nil)
}

// Plan asks what applying the sources would change.
func (c *Client) Plan(ctx context.Context, req PlanRequest) (Plan, error) {
	var p Plan
	return p, c.Do(ctx, "POST", "/v1/plan", req, &p)
}

// Apply applies the sources atomically. When the daemon refuses, the
// returned plan (if not nil) says why.
func (c *Client) Apply(ctx context.Context, req PlanRequest) (ApplyResult, error) {
	var r ApplyResult
	return r, c.Do(ctx, "POST", "/v1/apply", req, &r)
}
