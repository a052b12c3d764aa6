package parse

import (
	"errors"
	"fmt"
	"math/big"
	"regexp"
	"strings"
	"time"
)

// sizeUnits are the units a volume size may be written in.
var sizeUnits = map[string]int64{
	"B":   1,
	"KiB": 1 << 10, "MiB": 1 << 20, "GiB": 1 << 30, "TiB": 1 << 40, "PiB": 1 << 50,
	"KB": 1e3, "MB": 1e6, "GB": 1e9, "TB": 1e12, "PB": 1e15,
}

var sizeRE = regexp.MustCompile(`^([0-9]+(?:\.[0-9]+)?)\s*([A-Za-z]*)$`)

// parseSize parses a size with a unit ("20GiB", "1.5TiB", "512B") into bytes.
func parseSize(s string) (int64, error) {
	m := sizeRE.FindStringSubmatch(strings.TrimSpace(s))
	if m == nil {
		return 0, fmt.Errorf("%q is not a size: write a number and a unit, such as \"20GiB\"", s)
	}
	if m[2] == "" {
		return 0, fmt.Errorf("%q has no unit: write it with one, such as \"20GiB\" or \"512B\"", s)
	}
	unit, ok := sizeUnits[m[2]]
	if !ok {
		for u := range sizeUnits {
			if strings.EqualFold(u, m[2]) {
				return 0, fmt.Errorf("%q: unit %q is spelled %q", s, m[2], u)
			}
		}
		return 0, fmt.Errorf("%q: unknown unit %q; use B, KiB, MiB, GiB, TiB, PiB (or KB, MB, GB, TB, PB)", s, m[2])
	}
	r, ok := new(big.Rat).SetString(m[1])
	if !ok || len(m[1]) > 40 {
		return 0, fmt.Errorf("%q is not a size", s)
	}
	r.Mul(r, new(big.Rat).SetInt64(unit))
	if !r.IsInt() {
		return 0, fmt.Errorf("%q is not a whole number of bytes", s)
	}
	n := r.Num()
	if !n.IsInt64() {
		return 0, fmt.Errorf("%q is too large", s)
	}
	if n.Int64() <= 0 {
		return 0, fmt.Errorf("%q: a size must be larger than zero", s)
	}
	return n.Int64(), nil
}

// formatSize writes n bytes with the largest binary unit that divides it.
func formatSize(n int64) string {
	for _, u := range []string{"PiB", "TiB", "GiB", "MiB", "KiB"} {
		if f := sizeUnits[u]; n >= f && n%f == 0 {
			return fmt.Sprintf("%d%s", n/f, u)
		}
	}
	return fmt.Sprintf("%dB", n)
}

var durationUnits = map[string]time.Duration{
	"ns": time.Nanosecond, "us": time.Microsecond, "µs": time.Microsecond, "ms": time.Millisecond,
	"s": time.Second, "m": time.Minute, "h": time.Hour, "d": 24 * time.Hour, "w": 7 * 24 * time.Hour,
}

var durationPartRE = regexp.MustCompile(`^([0-9]+(?:\.[0-9]+)?)(ns|us|µs|ms|s|m|h|d|w)`)

var (
	numberRE    = regexp.MustCompile(`^[0-9.]+$`)
	errDuration = errors.New("not a duration")
)

// parseDuration parses a Go duration extended with d (24h) and w (7d):
// "30s", "5m", "72h", "1h30m", "7d".
func parseDuration(s string) (time.Duration, error) {
	rest := strings.TrimSpace(s)
	if rest == "" {
		return 0, fmt.Errorf("%q is not a duration: write a number and a unit, such as \"30s\", \"5m\" or \"72h\"", s)
	}
	var total time.Duration
	for rest != "" {
		m := durationPartRE.FindStringSubmatch(rest)
		if m == nil {
			if numberRE.MatchString(rest) {
				return 0, fmt.Errorf("%q has no unit: write it with one, such as \"30s\", \"5m\" or \"72h\"", s)
			}
			return 0, fmt.Errorf("%q is not a duration: use the units ms, s, m, h, d and w, such as \"30s\", \"5m\" or \"72h\"", s)
		}
		r, ok := new(big.Rat).SetString(m[1])
		if !ok || len(m[1]) > 30 {
			return 0, fmt.Errorf("%q: %w", s, errDuration)
		}
		r.Mul(r, new(big.Rat).SetInt64(int64(durationUnits[m[2]])))
		f, _ := r.Float64()
		if f > float64(1<<62) {
			return 0, fmt.Errorf("%q is too long", s)
		}
		total += time.Duration(f)
		if total > 1<<62 {
			return 0, fmt.Errorf("%q is too long", s)
		}
		rest = rest[len(m[0]):]
	}
	return total, nil
}

var nameRE = regexp.MustCompile(`^[A-Za-z][A-Za-z0-9_-]{0,62}$`)

// checkName tells what is wrong with the name of a service, volume, app or plugin.
func checkName(s string) error {
	if nameRE.MatchString(s) {
		return nil
	}
	return fmt.Errorf("%q is not a valid name: use a letter followed by up to 62 letters, digits, '-' or '_'", s)
}

// targetPrefix is the naming authority of default target names.
const targetPrefix = "iqn.2026-11.io.lockstep:"

// defaultTargetName derives a volume's iSCSI target name.
func defaultTargetName(service, volume string) string {
	return targetPrefix + iqnPart(service) + "." + iqnPart(volume)
}

func iqnPart(s string) string {
	var b strings.Builder
	for _, r := range strings.ToLower(s) {
		if r >= 'a' && r <= 'z' || r >= '0' && r <= '9' || r == '.' || r == '-' {
			b.WriteRune(r)
		} else {
			b.WriteByte('-')
		}
	}
	return b.String()
}

var (
	iqnRE = regexp.MustCompile(`^iqn\.[0-9]{4}-(0[1-9]|1[0-2])\.[a-z0-9]([a-z0-9-]*[a-z0-9])?(\.[a-z0-9]([a-z0-9-]*[a-z0-9])?)*(:[\x21-\x7e]+)?$`)
	euiRE = regexp.MustCompile(`^eui\.[0-9a-f]{16}$`)
	naaRE = regexp.MustCompile(`^naa\.([0-9a-f]{16}|[0-9a-f]{32})$`)
)

// checkISCSIName validates an iSCSI name (RFC 3720 section 3.2.6): an IQN
// such as "iqn.2026-11.com.example:db", or an eui. or naa. name.
func checkISCSIName(s string) error {
	if len(s) > 223 {
		return fmt.Errorf("%q is longer than the 223 bytes an iSCSI name may have", s)
	}
	l := strings.ToLower(s)
	if iqnRE.MatchString(l) || euiRE.MatchString(l) || naaRE.MatchString(l) {
		return nil
	}
	return fmt.Errorf("%q is not an iSCSI name: expected iqn.YYYY-MM.reversed.domain[:unique] (such as \"iqn.2026-11.com.example:db\"), eui.<16 hex> or naa.<16 or 32 hex>", s)
}

// inlinePasswordRE finds a password written in clear in a connection string:
// libpq's password=..., or the user:password@ of a URL.
var inlinePasswordRE = regexp.MustCompile(`(?i)(\bpassword\s*=\s*[^\s'"]|\bpassword\s*=\s*'[^']|://[^/@\s:]+:[^/@\s]+@)`)
