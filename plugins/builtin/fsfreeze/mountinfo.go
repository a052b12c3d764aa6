package fsfreeze

import (
	"bufio"
	"fmt"
	"os"
	"strings"
)

// mount is one line of /proc/self/mountinfo.
type mount struct {
	Dev        string // major:minor
	Mountpoint string
	Options    string // per-mount options (rw,noatime)
	FSType     string
	Source     string // the device, for a block file system
	Super      string // per-superblock options (rw,errors=remount-ro)
}

// mountinfoPath is read for the mount table; tests may point it elsewhere.
var mountinfoPath = "/proc/self/mountinfo"

// mounts reads the mount table. Where several mounts stack on one mount
// point, the last (the visible one) wins.
func mounts() (map[string]mount, error) {
	f, err := os.Open(mountinfoPath)
	if err != nil {
		return nil, fmt.Errorf("fsfreeze: %w", err)
	}
	defer f.Close()
	out := map[string]mount{}
	sc := bufio.NewScanner(f)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for sc.Scan() {
		m, ok := parseMountinfo(sc.Text())
		if ok {
			out[m.Mountpoint] = m
		}
	}
	if err := sc.Err(); err != nil {
		return nil, fmt.Errorf("fsfreeze: %s: %w", mountinfoPath, err)
	}
	return out, nil
}

// parseMountinfo parses "36 35 98:0 /mnt1 /mnt/parent rw,noatime master:1 -
// ext3 /dev/root rw,errors=continue" (proc(5)).
func parseMountinfo(line string) (mount, bool) {
	pre, post, ok := strings.Cut(line, " - ")
	if !ok {
		return mount{}, false
	}
	a, b := strings.Fields(pre), strings.Fields(post)
	if len(a) < 6 || len(b) < 3 {
		return mount{}, false
	}
	return mount{
		Dev: a[2], Mountpoint: unescape(a[4]), Options: a[5],
		FSType: b[0], Source: unescape(b[1]), Super: b[2],
	}, true
}

// unescape undoes the kernel's octal escapes (\040 for a space).
func unescape(s string) string {
	if !strings.Contains(s, `\`) {
		return s
	}
	var out strings.Builder
	for i := 0; i < len(s); i++ {
		if s[i] == '\\' && i+4 <= len(s) {
			if n, ok := octal(s[i+1 : i+4]); ok {
				out.WriteByte(n)
				i += 3
				continue
			}
		}
		out.WriteByte(s[i])
	}
	return out.String()
}

func octal(s string) (byte, bool) {
	if len(s) != 3 {
		return 0, false
	}
	var n int
	for _, c := range s {
		if c < '0' || c > '7' {
			return 0, false
		}
		n = n*8 + int(c-'0')
	}
	return byte(n), n < 256
}

// hasOption reports whether a comma-separated option list holds opt.
func hasOption(list, opt string) bool {
	for _, o := range strings.Split(list, ",") {
		if o == opt {
			return true
		}
	}
	return false
}
