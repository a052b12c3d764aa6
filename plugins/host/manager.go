package host

import (
	"archive/tar"
	"compress/gzip"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"regexp"
	"sort"
	"strings"
	"time"

	"github.com/lockstep-io/lockstep/plugins/sdk"
)

// ErrNotInstalled is returned for a plugin name the directory does not hold.
var ErrNotInstalled = errors.New("host: plugin not installed")

// maxBinary bounds what Install copies (a plugin binary, or the one file
// taken out of a .tar.gz).
const maxBinary = 1 << 30

// Manifest describes an installed plugin. It is stored as NAME.json beside
// the binary NAME in the plugin directory.
type Manifest struct {
	Name        string    `json:"name"`
	Version     string    `json:"version"`
	Protocol    int       `json:"protocol"`
	SHA256      string    `json:"sha256"`
	Handles     []string  `json:"handles"`
	Binary      string    `json:"binary"` // absolute path
	InstalledAt time.Time `json:"installed_at"`
}

// Manager owns a plugin directory:
//
//	DIR/NAME       the plugin binary, mode 0755
//	DIR/NAME.json  its Manifest
//
// Files are replaced by atomic rename, binary first, so a reader sees the
// old plugin, the new one, or (between the two renames) a binary whose
// checksum does not match its manifest, which every launch refuses.
type Manager struct {
	dir  string
	opts Options
}

// NewManager returns a manager for dir; opts are used for every launch.
func NewManager(dir string, opts Options) *Manager {
	return &Manager{dir: dir, opts: opts}
}

// Dir returns the plugin directory.
func (m *Manager) Dir() string { return m.dir }

var nameRE = regexp.MustCompile(`^[A-Za-z][A-Za-z0-9_-]{0,62}$`)

// Install copies the plugin at src (a binary, or a .tar.gz holding one
// executable file) into the directory, checks it against wantSHA256 when
// that is not empty, starts it once to read its Info and refuses a plugin
// of another protocol. An installed plugin of the same name is replaced.
func (m *Manager) Install(ctx context.Context, src, wantSHA256 string) (Manifest, error) {
	if err := os.MkdirAll(m.dir, 0o755); err != nil {
		return Manifest{}, fmt.Errorf("install %s: %w", src, err)
	}
	tmp, sum, err := m.copyIn(src)
	if err != nil {
		return Manifest{}, fmt.Errorf("install %s: %w", src, err)
	}
	defer os.Remove(tmp) // a no-op once renamed
	if want := strings.ToLower(strings.TrimSpace(wantSHA256)); want != "" && want != sum {
		return Manifest{}, fmt.Errorf("install %s: %w: expected sha256 %s, the file has %s", src, ErrChecksum, want, sum)
	}
	c, err := New(Spec{Name: filepath.Base(src), Path: tmp, SHA256: sum}, m.opts)
	if err != nil {
		return Manifest{}, err
	}
	info, err := c.Info(ctx)
	c.Close()
	if err != nil {
		return Manifest{}, fmt.Errorf("install %s: %w", src, err)
	}
	if info.Protocol != sdk.ProtocolVersion {
		return Manifest{}, fmt.Errorf("install %s: %w: plugin %q speaks protocol %d, this lockstep speaks %d", src, ErrProtocol, info.Name, info.Protocol, sdk.ProtocolVersion)
	}
	if !nameRE.MatchString(info.Name) {
		return Manifest{}, fmt.Errorf("install %s: the plugin calls itself %q, which is not a valid plugin name", src, info.Name)
	}
	bin := filepath.Join(m.dir, info.Name)
	man := Manifest{
		Name: info.Name, Version: info.Version, Protocol: info.Protocol, SHA256: sum,
		Handles: info.Handles, Binary: bin, InstalledAt: time.Now().UTC(),
	}
	if err := os.Rename(tmp, bin); err != nil {
		return Manifest{}, fmt.Errorf("install %s: %w", src, err)
	}
	if err := m.writeManifest(man); err != nil {
		return Manifest{}, fmt.Errorf("install %s: %w", src, err)
	}
	return man, syncDir(m.dir)
}

// copyIn copies src (or the executable inside a .tar.gz) to a temporary
// file in the directory, mode 0755, synced, and returns its path and
// SHA-256.
func (m *Manager) copyIn(src string) (path, sum string, err error) {
	f, err := os.Open(src)
	if err != nil {
		return "", "", err
	}
	defer f.Close()
	var r io.Reader = f
	if strings.HasSuffix(src, ".tar.gz") || strings.HasSuffix(src, ".tgz") {
		if r, err = executableInTarGz(f); err != nil {
			return "", "", err
		}
	}
	tmp, err := os.CreateTemp(m.dir, ".install-*")
	if err != nil {
		return "", "", err
	}
	defer func() {
		if err != nil {
			tmp.Close()
			os.Remove(tmp.Name())
		}
	}()
	h := sha256.New()
	n, err := io.Copy(io.MultiWriter(tmp, h), io.LimitReader(r, maxBinary+1))
	if err != nil {
		return "", "", err
	}
	if n > maxBinary {
		return "", "", fmt.Errorf("larger than %d bytes", maxBinary)
	}
	if err = tmp.Chmod(0o755); err != nil {
		return "", "", err
	}
	if err = tmp.Sync(); err != nil {
		return "", "", err
	}
	if err = tmp.Close(); err != nil {
		return "", "", err
	}
	return tmp.Name(), hex.EncodeToString(h.Sum(nil)), nil
}

// executableInTarGz positions a reader at the one executable regular file
// of a gzipped tar archive.
func executableInTarGz(r io.Reader) (io.Reader, error) {
	zr, err := gzip.NewReader(r)
	if err != nil {
		return nil, fmt.Errorf("not a .tar.gz: %w", err)
	}
	// Two passes are not possible on a stream, so buffer the one candidate.
	tr := tar.NewReader(zr)
	var found []byte
	var names []string
	for {
		hdr, err := tr.Next()
		if err == io.EOF {
			break
		}
		if err != nil {
			return nil, fmt.Errorf("reading the archive: %w", err)
		}
		if hdr.Typeflag != tar.TypeReg || hdr.Mode&0o111 == 0 {
			continue
		}
		names = append(names, hdr.Name)
		if len(names) > 1 {
			return nil, fmt.Errorf("the archive holds more than one executable (%s); it must hold exactly one", strings.Join(names, ", "))
		}
		if hdr.Size > maxBinary {
			return nil, fmt.Errorf("%s: larger than %d bytes", hdr.Name, maxBinary)
		}
		if found, err = io.ReadAll(io.LimitReader(tr, maxBinary)); err != nil {
			return nil, fmt.Errorf("reading %s from the archive: %w", hdr.Name, err)
		}
	}
	if len(names) == 0 {
		return nil, errors.New("the archive holds no executable file")
	}
	return strings.NewReader(string(found)), nil
}

func (m *Manager) writeManifest(man Manifest) error {
	b, err := json.MarshalIndent(man, "", "  ")
	if err != nil {
		return err
	}
	tmp, err := os.CreateTemp(m.dir, ".manifest-*")
	if err != nil {
		return err
	}
	defer os.Remove(tmp.Name())
	if _, err := tmp.Write(append(b, '\n')); err != nil {
		tmp.Close()
		return err
	}
	if err := tmp.Sync(); err != nil {
		tmp.Close()
		return err
	}
	if err := tmp.Close(); err != nil {
		return err
	}
	if err := os.Chmod(tmp.Name(), 0o644); err != nil {
		return err
	}
	return os.Rename(tmp.Name(), filepath.Join(m.dir, man.Name+".json"))
}

func syncDir(dir string) error {
	d, err := os.Open(dir)
	if err != nil {
		return err
	}
	defer d.Close()
	return d.Sync()
}

// List returns the installed plugins sorted by name.
func (m *Manager) List() ([]Manifest, error) {
	ents, err := os.ReadDir(m.dir)
	if errors.Is(err, fs.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("plugin directory %s: %w", m.dir, err)
	}
	var out []Manifest
	for _, e := range ents {
		name, ok := strings.CutSuffix(e.Name(), ".json")
		if !ok || !nameRE.MatchString(name) {
			continue
		}
		man, err := m.Info(name)
		if err != nil {
			return nil, err
		}
		out = append(out, man)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Name < out[j].Name })
	return out, nil
}

// Info returns the manifest of the installed plugin name.
func (m *Manager) Info(name string) (Manifest, error) {
	if !nameRE.MatchString(name) {
		return Manifest{}, fmt.Errorf("plugin %q: %w", name, ErrNotInstalled)
	}
	b, err := os.ReadFile(filepath.Join(m.dir, name+".json"))
	if errors.Is(err, fs.ErrNotExist) {
		return Manifest{}, fmt.Errorf("plugin %q: %w in %s", name, ErrNotInstalled, m.dir)
	}
	if err != nil {
		return Manifest{}, fmt.Errorf("plugin %q: %w", name, err)
	}
	var man Manifest
	if err := json.Unmarshal(b, &man); err != nil {
		return Manifest{}, fmt.Errorf("plugin %q: manifest %s: %w", name, filepath.Join(m.dir, name+".json"), err)
	}
	if man.Name != name {
		return Manifest{}, fmt.Errorf("plugin %q: manifest names %q", name, man.Name)
	}
	man.Binary = filepath.Join(m.dir, name) // wherever the directory is now
	return man, nil
}

// Remove deletes the installed plugin name: manifest first, so that a
// half-removed plugin is simply not installed.
func (m *Manager) Remove(name string) error {
	if _, err := m.Info(name); err != nil {
		return err
	}
	if err := os.Remove(filepath.Join(m.dir, name+".json")); err != nil {
		return fmt.Errorf("plugin %q: %w", name, err)
	}
	if err := os.Remove(filepath.Join(m.dir, name)); err != nil && !errors.Is(err, fs.ErrNotExist) {
		return fmt.Errorf("plugin %q: %w", name, err)
	}
	return syncDir(m.dir)
}

// Client returns a client for the installed plugin name. Its binary is
// checked against the manifest's SHA-256 at every launch.
func (m *Manager) Client(name string) (*Client, error) {
	man, err := m.Info(name)
	if err != nil {
		return nil, err
	}
	return New(Spec{Name: man.Name, Path: man.Binary, SHA256: man.SHA256}, m.opts)
}
