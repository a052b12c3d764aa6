package daemon

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"time"
)

// The control API is HTTP over a unix socket that only the daemon's user can
// open (mode 0600): file permissions are its authentication until the
// network API with tokens arrives.
func listenControl(path string) (net.Listener, error) {
	if err := os.Remove(path); err != nil && !errors.Is(err, os.ErrNotExist) {
		return nil, fmt.Errorf("control socket %s: %w", path, err)
	}
	old := umask(0o177)
	l, err := net.Listen("unix", path)
	umask(old)
	if err != nil {
		return nil, fmt.Errorf("control socket %s: %w", path, err)
	}
	if err := os.Chmod(path, 0o600); err != nil {
		l.Close()
		return nil, err
	}
	return l, nil
}

func (d *Daemon) serveControl(ctx context.Context, l net.Listener) error {
	mux := http.NewServeMux()
	mux.HandleFunc("GET /v0/volumes", func(w http.ResponseWriter, r *http.Request) { reply(w, d.Volumes(), nil) })
	mux.HandleFunc("GET /v0/exposures", func(w http.ResponseWriter, r *http.Request) { reply(w, d.Exposures(), nil) })
	mux.HandleFunc("POST /v0/expose", func(w http.ResponseWriter, r *http.Request) {
		var req ExposeRequest
		if err := json.NewDecoder(io.LimitReader(r.Body, 1<<16)).Decode(&req); err != nil {
			reply(w, nil, fmt.Errorf("bad request: %w", err))
			return
		}
		e, err := d.Expose(r.Context(), req)
		reply(w, e, err)
	})
	mux.HandleFunc("POST /v0/unexpose", func(w http.ResponseWriter, r *http.Request) {
		var req struct {
			IQN  string `json:"iqn"`
			Keep bool   `json:"keep"`
		}
		if err := json.NewDecoder(io.LimitReader(r.Body, 1<<16)).Decode(&req); err != nil {
			reply(w, nil, fmt.Errorf("bad request: %w", err))
			return
		}
		reply(w, map[string]string{"removed": req.IQN}, d.Unexpose(r.Context(), req.IQN, req.Keep))
	})
	srv := &http.Server{Handler: mux, ReadHeaderTimeout: 10 * time.Second}
	go func() {
		<-ctx.Done()
		srv.Close()
	}()
	err := srv.Serve(l)
	if errors.Is(err, http.ErrServerClosed) {
		return nil
	}
	return err
}

type apiError struct {
	Error string `json:"error"`
}

func reply(w http.ResponseWriter, v any, err error) {
	w.Header().Set("Content-Type", "application/json")
	if err != nil {
		w.WriteHeader(http.StatusBadRequest)
		json.NewEncoder(w).Encode(apiError{err.Error()})
		return
	}
	json.NewEncoder(w).Encode(v)
}

// Client talks to a daemon's control socket.
type Client struct {
	hc *http.Client
}

// Dial returns a client for the control socket at path.
func Dial(path string) (*Client, error) {
	if _, err := os.Stat(path); err != nil {
		return nil, fmt.Errorf("no daemon control socket at %s (is `lockstep serve` running on this data directory?): %w", path, err)
	}
	return &Client{hc: &http.Client{Timeout: 60 * time.Second, Transport: &http.Transport{
		DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
			var dl net.Dialer
			return dl.DialContext(ctx, "unix", path)
		},
	}}}, nil
}

// Do calls method on the API path with body in and decodes the reply into out.
func (c *Client) Do(ctx context.Context, method, path string, in, out any) error {
	var body io.Reader
	if in != nil {
		b, err := json.Marshal(in)
		if err != nil {
			return err
		}
		body = bytes.NewReader(b)
	}
	req, err := http.NewRequestWithContext(ctx, method, "http://lockstep"+path, body)
	if err != nil {
		return err
	}
	resp, err := c.hc.Do(req)
	if err != nil {
		return fmt.Errorf("daemon: %w", err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		var ae apiError
		json.NewDecoder(resp.Body).Decode(&ae)
		return errors.New(ae.Error)
	}
	return json.NewDecoder(resp.Body).Decode(out)
}
