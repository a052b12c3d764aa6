package api

import (
	"context"
	"net/url"
	"time"
)

// FoldResult is one retention fold: each service folded by its retention,
// then the volumes of no service (clones, volumes no policy names).
type FoldResult struct {
	Time     time.Time     `json:"time"`
	Services []ServiceFold `json:"services"`
	// Unprotected covers the volumes of no service: clones are folded
	// through now (their own history is not kept), other volumes by the
	// default journal window keeping their markers.
	Unprotected *ServiceFold `json:"unprotected,omitempty"`
	// Totals over the whole fold.
	SegmentsRemoved int   `json:"segments_removed"`
	BytesFreed      int64 `json:"bytes_freed"`
	// JournalBytes is what the journal's segments hold after the fold.
	JournalBytes int64 `json:"journal_bytes"`
}

// ServiceFold is one service's part of a fold.
type ServiceFold struct {
	Service string   `json:"service"`
	Volumes []string `json:"volumes"`
	// WindowStart: every write after it stays restorable.
	WindowStart time.Time `json:"window_start,omitzero"`
	// Kept lists the markers older than WindowStart the keep rules keep.
	Kept []string `json:"kept"`
	// UndoPoint, when set, is the undo point of a restore kept readable
	// beyond the window.
	UndoPoint time.Time `json:"undo_point,omitzero"`
	// MarkersExpired lists the catalog markers this fold expired.
	MarkersExpired  []string      `json:"markers_expired"`
	SegmentsRemoved int           `json:"segments_removed"`
	BytesFreed      int64         `json:"bytes_freed"`
	Duration        time.Duration `json:"duration"`
	// Skipped says why the service was not folded (a restore of it is
	// running or unfinished).
	Skipped string `json:"skipped,omitempty"`
	Error   string `json:"error,omitempty"`
}

// Fold runs one retention fold now, of service (every service and the
// volumes of none when empty), and returns what it did.
func (c *Client) Fold(ctx context.Context, service string) (FoldResult, error) {
	var r FoldResult
	p := "/v1/fold"
	if service != "" {
		p = "/v1/services/" + url.PathEscape(service) + "/fold"
	}
	return r, c.Do(ctx, "POST", p, nil, &r)
}
