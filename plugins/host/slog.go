package host

import (
	"log/slog"

	"github.com/hashicorp/go-hclog"
)

// SlogLogger routes go-plugin's and the plugins' log lines (warnings and
// errors) into l, so that a daemon's plugin messages land in its own
// structured log rather than on the process's stderr.
func SlogLogger(l *slog.Logger, name string) hclog.Logger {
	std := slog.NewLogLogger(l.Handler(), slog.LevelWarn)
	return hclog.FromStandardLogger(std, &hclog.LoggerOptions{Name: name, Level: hclog.Warn})
}
