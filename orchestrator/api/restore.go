package api

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"time"

	"github.com/lockstep-io/lockstep/orchestrator/restore"
)

// Restores run in the daemon; their endpoints:
//
//	POST /v1/services/{service}/restore/plan  RestoreRequest -> RestorePlan
//	POST /v1/services/{service}/restore       RestoreRequest -> stream
//	POST /v1/services/{service}/undo          -> stream
//	POST /v1/restores/{id}/resume             -> stream
//	GET  /v1/restores[?service=S]             -> []RestoreRecord
//	GET  /v1/restores/{id}                    -> RestoreRecord
//
// A stream is newline-delimited JSON: one RestoreLine with Progress per
// step start and end, then one final line (Final set) with the record, the
// as-new result or the error. The daemon runs the restore detached from the
// request: a client that goes away does not stop it.

// RestorePlan is what a restore would do (nothing changes).
type RestorePlan = restore.Plan

// RestoreRecord is the durable record of one in-place restore.
type RestoreRecord = restore.Record

// RestoreRequest names what to restore and to which point.
type RestoreRequest struct {
	// Volume restores one volume of the service (store name service/volume
	// or the policy name), breaking the service's consistency.
	Volume string `json:"volume,omitempty"`
	// Marker is a marker id; At a time instead (RFC 3339 or what
	// restore.ParseTime reads, relative to the daemon's clock).
	Marker string `json:"marker,omitempty"`
	At     string `json:"at,omitempty"`
	// CrashConsistent restores to At exactly instead of the newest
	// application-consistent marker at or before it.
	CrashConsistent bool `json:"crash_consistent,omitempty"`
	// AsNew, when set, presents every volume at the point as a new
	// copy-on-write volume named VOLUME+AsNew with a target of its own,
	// leaving the service untouched.
	AsNew string `json:"as_new,omitempty"`
}

// RestoreProgress is a step of a running restore starting (Done false) or
// ending.
type RestoreProgress struct {
	Step    string        `json:"step"`
	Object  string        `json:"object,omitempty"`
	Done    bool          `json:"done,omitempty"`
	Outcome string        `json:"outcome,omitempty"`
	N       int           `json:"n"`
	Total   int           `json:"total"`
	Bytes   int64         `json:"bytes,omitempty"`
	Elapsed time.Duration `json:"elapsed"`
}

// AsNewVolume is one new volume of an as-new restore and its target.
type AsNewVolume struct {
	Source string `json:"source"`
	Name   string `json:"name"`
	IQN    string `json:"iqn"`
	LUN    uint64 `json:"lun"`
	Portal string `json:"portal"`
}

// AsNewResult is the outcome of an as-new restore.
type AsNewResult struct {
	Plan    *RestorePlan  `json:"plan"`
	Volumes []AsNewVolume `json:"volumes"`
}

// RestoreLine is one line of a restore stream.
type RestoreLine struct {
	Progress *RestoreProgress `json:"progress,omitempty"`
	// Final marks the last line; Record (in place), AsNew or Error say how
	// it ended. A failed in-place restore carries both Record and Error.
	Final  bool           `json:"final,omitempty"`
	Record *RestoreRecord `json:"record,omitempty"`
	AsNew  *AsNewResult   `json:"as_new,omitempty"`
	Error  string         `json:"error,omitempty"`
}

// RestoreResult is how a streamed restore ended.
type RestoreResult struct {
	Record *RestoreRecord
	AsNew  *AsNewResult
}

// ErrRestoreFailed wraps the error of a restore the daemon ran and that
// failed (the result's Record, when set, says where it stopped).
var ErrRestoreFailed = errors.New("api: restore failed")

type restoreError struct{ msg string }

func (e *restoreError) Error() string        { return e.msg }
func (e *restoreError) Is(target error) bool { return target == ErrRestoreFailed }

func servicePath(service string) string { return "/v1/services/" + url.PathEscape(service) }

// RestorePlan says what a restore of service would do.
func (c *Client) RestorePlan(ctx context.Context, service string, req RestoreRequest) (RestorePlan, error) {
	var p RestorePlan
	return p, c.Do(ctx, "POST", servicePath(service)+"/restore/plan", req, &p)
}

// Restore restores service (in place, one volume, or as new) and calls
// progress for every step; cancelling ctx stops following, not the restore.
func (c *Client) Restore(ctx context.Context, service string, req RestoreRequest, progress func(RestoreProgress)) (RestoreResult, error) {
	return c.stream(ctx, servicePath(service)+"/restore", req, progress)
}

// Undo returns service to the state just before its newest restore.
func (c *Client) Undo(ctx context.Context, service string, progress func(RestoreProgress)) (RestoreResult, error) {
	return c.stream(ctx, servicePath(service)+"/undo", struct{}{}, progress)
}

// Resume continues the unfinished restore id.
func (c *Client) Resume(ctx context.Context, id string, progress func(RestoreProgress)) (RestoreResult, error) {
	return c.stream(ctx, "/v1/restores/"+url.PathEscape(id)+"/resume", struct{}{}, progress)
}

// Restores lists the restore records of service (all when empty), oldest
// first.
func (c *Client) Restores(ctx context.Context, service string) ([]RestoreRecord, error) {
	q := ""
	if service != "" {
		q = "?service=" + url.QueryEscape(service)
	}
	var rs []RestoreRecord
	return rs, c.Do(ctx, "GET", "/v1/restores"+q, nil, &rs)
}

// RestoreRecord returns the restore record id.
func (c *Client) RestoreRecord(ctx context.Context, id string) (RestoreRecord, error) {
	var r RestoreRecord
	return r, c.Do(ctx, "GET", "/v1/restores/"+url.PathEscape(id), nil, &r)
}

// stream posts in to path and reads the reply stream.
func (c *Client) stream(ctx context.Context, path string, in any, progress func(RestoreProgress)) (RestoreResult, error) {
	var res RestoreResult
	// No overall timeout: a restore takes as long as its bytes take.
	hc := &http.Client{Transport: c.hc.Transport, CheckRedirect: c.hc.CheckRedirect}
	resp, err := c.send(ctx, hc, "POST", path, in)
	if err != nil {
		return res, err
	}
	defer resp.Body.Close()
	dec := json.NewDecoder(bufio.NewReader(resp.Body))
	for {
		var line RestoreLine
		if err := dec.Decode(&line); err != nil {
			if errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) {
				return res, fmt.Errorf("daemon at %s: the connection ended before the restore did (did the daemon stop?); see `lockstep restores`: an unfinished restore goes on with `lockstep restore --resume ID`", c.addr)
			}
			if ctx.Err() != nil {
				return res, fmt.Errorf("stopped following the restore (it goes on in the daemon; see `lockstep restores`): %w", ctx.Err())
			}
			return res, fmt.Errorf("daemon at %s: bad restore stream: %w", c.addr, err)
		}
		if line.Progress != nil && progress != nil {
			progress(*line.Progress)
		}
		if !line.Final {
			continue
		}
		res.Record, res.AsNew = line.Record, line.AsNew
		if line.Error != "" {
			return res, &restoreError{msg: line.Error}
		}
		return res, nil
	}
}
