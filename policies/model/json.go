package model

import (
	"encoding/json"
	"strings"
	"time"
)

// FormatDuration writes d the way a policy would ("72h", "1m30s", "500ms").
func FormatDuration(d time.Duration) string {
	s := d.String()
	if strings.HasSuffix(s, "m0s") {
		s = strings.TrimSuffix(s, "0s")
	}
	if strings.HasSuffix(s, "h0m") {
		s = strings.TrimSuffix(s, "0m")
	}
	return s
}

// The JSON forms below write durations as policy strings ("5m") rather than
// nanoseconds, so that `lockstep policy show --json` reads like the policy.

// MarshalJSON implements json.Marshaler.
func (p *Policy) MarshalJSON() ([]byte, error) {
	services, plugins := p.Services, p.Plugins
	if services == nil {
		services = []*Service{}
	}
	if plugins == nil {
		plugins = []*Plugin{}
	}
	return json.Marshal(struct {
		Services []*Service `json:"services"`
		Plugins  []*Plugin  `json:"plugins"`
	}{services, plugins})
}

// MarshalJSON implements json.Marshaler.
func (p *Plugin) MarshalJSON() ([]byte, error) {
	return json.Marshal(struct {
		Name    string `json:"name"`
		Source  string `json:"source"`
		SHA256  string `json:"sha256,omitempty"`
		Version string `json:"version,omitempty"`
	}{p.Name, p.Source, p.SHA256, p.Version})
}

// MarshalJSON implements json.Marshaler.
func (s *Service) MarshalJSON() ([]byte, error) {
	return json.Marshal(struct {
		Name        string      `json:"name"`
		Volumes     []*Volume   `json:"volumes"`
		Apps        []*App      `json:"apps"`
		Consistency Consistency `json:"consistency"`
		RPO         RPO         `json:"rpo"`
		Retention   Retention   `json:"retention"`
	}{s.Name, nonNil(s.Volumes), nonNil(s.Apps), s.Consistency, s.RPO, s.Retention})
}

// MarshalJSON implements json.Marshaler.
func (v *Volume) MarshalJSON() ([]byte, error) {
	return json.Marshal(struct {
		Name       string   `json:"name"`
		Size       int64    `json:"size_bytes"`
		BlockSize  int      `json:"block_size"`
		TargetName string   `json:"target_name"`
		Initiators []string `json:"initiators"`
		CHAP       *CHAP    `json:"chap"`
	}{v.Name, v.Size, v.BlockSize, v.TargetName, nonNil(v.Initiators), v.CHAP})
}

// MarshalJSON implements json.Marshaler.
func (c *CHAP) MarshalJSON() ([]byte, error) {
	var mutual *Secret
	if c.MutualUsername != "" {
		mutual = &c.MutualSecret
	}
	return json.Marshal(struct {
		Username       string  `json:"username"`
		Secret         Secret  `json:"secret"`
		MutualUsername string  `json:"mutual_username,omitempty"`
		MutualSecret   *Secret `json:"mutual_secret,omitempty"`
	}{c.Username, c.Secret, c.MutualUsername, mutual})
}

// MarshalJSON implements json.Marshaler.
func (a *App) MarshalJSON() ([]byte, error) {
	cfg := make(map[string]any, len(a.Config))
	for k, v := range a.Config {
		if d, ok := v.(time.Duration); ok {
			v = FormatDuration(d)
		}
		cfg[k] = v
	}
	return json.Marshal(struct {
		Plugin    string         `json:"plugin"`
		Name      string         `json:"name"`
		Volumes   []string       `json:"volumes"`
		DependsOn []string       `json:"depends_on"`
		Config    map[string]any `json:"config"`
	}{a.Plugin, a.Name, nonNil(a.Volumes), nonNil(a.DependsOn), cfg})
}

// MarshalJSON implements json.Marshaler.
func (c Consistency) MarshalJSON() ([]byte, error) {
	every := ""
	if c.Every > 0 {
		every = FormatDuration(c.Every)
	}
	return json.Marshal(struct {
		Schedule         string         `json:"schedule,omitempty"`
		Every            string         `json:"every,omitempty"`
		QuiesceTimeout   string         `json:"quiesce_timeout"`
		OnQuiesceFailure QuiesceFailure `json:"on_quiesce_failure"`
		MaxGap           string         `json:"max_gap"`
	}{c.Schedule, every, FormatDuration(c.QuiesceTimeout), c.OnQuiesceFailure, FormatDuration(c.MaxGap)})
}

// MarshalJSON implements json.Marshaler.
func (r RPO) MarshalJSON() ([]byte, error) {
	return json.Marshal(struct {
		Journal string `json:"journal"`
	}{FormatDuration(r.Journal)})
}

// MarshalJSON implements json.Marshaler.
func (r Retention) MarshalJSON() ([]byte, error) {
	return json.Marshal(struct {
		Journal     string `json:"journal"`
		KeepHourly  int    `json:"keep_hourly"`
		KeepDaily   int    `json:"keep_daily"`
		KeepWeekly  int    `json:"keep_weekly"`
		KeepMonthly int    `json:"keep_monthly"`
		KeepYearly  int    `json:"keep_yearly"`
	}{FormatDuration(r.Journal), r.KeepHourly, r.KeepDaily, r.KeepWeekly, r.KeepMonthly, r.KeepYearly})
}

func nonNil[T any](s []T) []T {
	if s == nil {
		return []T{}
	}
	return s
}
