package agent

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/hex"
	"encoding/pem"
	"errors"
	"fmt"
	"math/big"
	"net"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/lockstep-io/lockstep/orchestrator/api"
)

// Files of the daemon's PKI directory (DATA/pki).
const (
	CACertFile     = "ca.crt"
	CAKeyFile      = "ca.key" // 0600
	DaemonCertFile = "daemon.crt"
	DaemonKeyFile  = "daemon.key" // 0600
)

// Certificate lifetimes. Agent certificates are not renewed automatically
// yet: an agent is enrolled again before its certificate expires.
const (
	caValidity    = 20 * 365 * 24 * time.Hour
	agentValidity = 5 * 365 * 24 * time.Hour
)

// daemonURI is the URI SAN of the daemon's client certificate; agents
// accept a client only with it (and the CA's signature, and client-auth
// usage).
var daemonURI = &url.URL{Scheme: "lockstep", Host: "daemon"}

// agentURI is the URI SAN of agent name's certificate.
func agentURI(name string) *url.URL {
	return &url.URL{Scheme: "lockstep", Host: "agent", Path: "/" + name}
}

// PKI is the daemon's certificate authority and its client certificate.
type PKI struct {
	CA     *x509.Certificate
	CAPEM  []byte
	caKey  *ecdsa.PrivateKey
	client tls.Certificate
}

// LoadOrCreatePKI opens the PKI in dir, creating the CA (ECDSA P-256) and
// the daemon's client certificate on first use. Keys are written 0600 and
// a key file others can read is refused.
func LoadOrCreatePKI(dir string) (*PKI, error) {
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, fmt.Errorf("pki %s: %w", dir, err)
	}
	caCrt, caKey := filepath.Join(dir, CACertFile), filepath.Join(dir, CAKeyFile)
	if _, err := os.Stat(caCrt); errors.Is(err, os.ErrNotExist) {
		if err := createCA(caCrt, caKey); err != nil {
			return nil, fmt.Errorf("pki %s: creating the CA: %w", dir, err)
		}
	}
	p := &PKI{}
	var err error
	if p.CA, p.CAPEM, err = readCert(caCrt); err != nil {
		return nil, err
	}
	key, err := readKey(caKey)
	if err != nil {
		return nil, err
	}
	ek, ok := key.(*ecdsa.PrivateKey)
	if !ok {
		return nil, fmt.Errorf("pki: %s is not an ECDSA key", caKey)
	}
	p.caKey = ek
	dCrt, dKey := filepath.Join(dir, DaemonCertFile), filepath.Join(dir, DaemonKeyFile)
	if _, err := os.Stat(dCrt); errors.Is(err, os.ErrNotExist) {
		if err := p.createDaemonCert(dCrt, dKey); err != nil {
			return nil, fmt.Errorf("pki %s: creating the daemon certificate: %w", dir, err)
		}
	}
	if err := checkKeyMode(dKey); err != nil {
		return nil, err
	}
	if p.client, err = tls.LoadX509KeyPair(dCrt, dKey); err != nil {
		return nil, fmt.Errorf("pki: daemon certificate: %w", err)
	}
	return p, nil
}

// Fingerprint is what `lockstep agent token` prints and `lockstep agent
// enroll` checks: the SHA-256 of the CA certificate.
func (p *PKI) Fingerprint() string { return Fingerprint(p.CA) }

// Fingerprint returns "sha256:HEX" of cert's DER encoding.
func Fingerprint(cert *x509.Certificate) string {
	s := sha256.Sum256(cert.Raw)
	return "sha256:" + hex.EncodeToString(s[:])
}

// SameFingerprint compares fingerprints, ignoring case and colons between
// bytes (as openssl prints them).
func SameFingerprint(a, b string) bool {
	norm := func(s string) string {
		s = strings.ToLower(strings.TrimSpace(s))
		s = strings.TrimPrefix(s, "sha256:")
		return strings.ReplaceAll(s, ":", "")
	}
	return norm(a) != "" && norm(a) == norm(b)
}

func serial() (*big.Int, error) {
	return rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 127))
}

// SerialString formats a certificate serial as the registry records it.
func SerialString(n *big.Int) string { return strings.ToLower(n.Text(16)) }

func createCA(crtPath, keyPath string) error {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return err
	}
	sn, err := serial()
	if err != nil {
		return err
	}
	now := time.Now()
	tmpl := &x509.Certificate{
		SerialNumber:          sn,
		Subject:               pkix.Name{CommonName: "lockstep agent CA " + SerialString(sn)[:8], Organization: []string{"Lockstep"}},
		NotBefore:             now.Add(-time.Hour),
		NotAfter:              now.Add(caValidity),
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageCRLSign,
		BasicConstraintsValid: true,
		IsCA:                  true,
		MaxPathLenZero:        true,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		return err
	}
	// Key first: a certificate without its key would be taken for a CA.
	if err := writeKey(keyPath, key); err != nil {
		return err
	}
	return api.WriteFileAtomic(crtPath, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), 0o644)
}

func (p *PKI) createDaemonCert(crtPath, keyPath string) error {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return err
	}
	sn, err := serial()
	if err != nil {
		return err
	}
	now := time.Now()
	tmpl := &x509.Certificate{
		SerialNumber: sn,
		Subject:      pkix.Name{CommonName: "lockstep daemon", Organization: []string{"Lockstep"}},
		URIs:         []*url.URL{daemonURI},
		NotBefore:    now.Add(-time.Hour),
		NotAfter:     p.CA.NotAfter,
		KeyUsage:     x509.KeyUsageDigitalSignature,
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, p.CA, &key.PublicKey, p.caKey)
	if err != nil {
		return err
	}
	if err := writeKey(keyPath, key); err != nil {
		return err
	}
	return api.WriteFileAtomic(crtPath, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), 0o644)
}

// IssueAgent signs the agent certificate of name for the public key of
// csrPEM, whose signature must verify. The subject the CSR asks for is
// ignored: the certificate names the agent as the daemon knows it.
func (p *PKI) IssueAgent(csrPEM []byte, name string) (certPEM []byte, serialHex string, err error) {
	blk, _ := pem.Decode(csrPEM)
	if blk == nil || blk.Type != "CERTIFICATE REQUEST" {
		return nil, "", errors.New("the certificate request is not a PEM CERTIFICATE REQUEST")
	}
	csr, err := x509.ParseCertificateRequest(blk.Bytes)
	if err != nil {
		return nil, "", fmt.Errorf("certificate request: %w", err)
	}
	if err := csr.CheckSignature(); err != nil {
		return nil, "", fmt.Errorf("certificate request: %w", err)
	}
	if err := checkPublicKey(csr.PublicKey); err != nil {
		return nil, "", err
	}
	sn, err := serial()
	if err != nil {
		return nil, "", err
	}
	now := time.Now()
	tmpl := &x509.Certificate{
		SerialNumber: sn,
		Subject:      pkix.Name{CommonName: name, Organization: []string{"Lockstep agent"}},
		DNSNames:     []string{name},
		URIs:         []*url.URL{agentURI(name)},
		NotBefore:    now.Add(-time.Hour),
		NotAfter:     now.Add(agentValidity),
		KeyUsage:     x509.KeyUsageDigitalSignature,
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
	}
	if tmpl.NotAfter.After(p.CA.NotAfter) {
		tmpl.NotAfter = p.CA.NotAfter
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, p.CA, csr.PublicKey, p.caKey)
	if err != nil {
		return nil, "", err
	}
	return pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), SerialString(sn), nil
}

func checkPublicKey(k any) error {
	if ek, ok := k.(*ecdsa.PublicKey); ok && (ek.Curve == elliptic.P256() || ek.Curve == elliptic.P384()) {
		return nil
	}
	return fmt.Errorf("certificate request: public key %T: want ECDSA P-256 or P-384", k)
}

// Pool returns a pool holding only the CA.
func (p *PKI) Pool() *x509.CertPool {
	pool := x509.NewCertPool()
	pool.AddCert(p.CA)
	return pool
}

// newKeyAndCSR makes an agent's key and its certificate request.
func newKeyAndCSR(name string) (*ecdsa.PrivateKey, []byte, error) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, nil, err
	}
	der, err := x509.CreateCertificateRequest(rand.Reader, &x509.CertificateRequest{Subject: pkix.Name{CommonName: name}}, key)
	if err != nil {
		return nil, nil, err
	}
	return key, der, nil
}

func writeKey(path string, key *ecdsa.PrivateKey) error {
	der, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		return err
	}
	return api.WriteFileAtomic(path, pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: der}), 0o600)
}

func checkKeyMode(path string) error {
	fi, err := os.Stat(path)
	if err != nil {
		return fmt.Errorf("pki: %w", err)
	}
	if fi.Mode().Perm()&0o077 != 0 {
		return fmt.Errorf("pki: key %s has mode %#o: others may have read it; fix its mode to 0600 and consider the key leaked", path, fi.Mode().Perm())
	}
	return nil
}

func readKey(path string) (any, error) {
	if err := checkKeyMode(path); err != nil {
		return nil, err
	}
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("pki: %w", err)
	}
	blk, _ := pem.Decode(b)
	if blk == nil {
		return nil, fmt.Errorf("pki: %s holds no PEM key", path)
	}
	k, err := x509.ParsePKCS8PrivateKey(blk.Bytes)
	if err != nil {
		return nil, fmt.Errorf("pki: %s: %w", path, err)
	}
	return k, nil
}

func readCert(path string) (*x509.Certificate, []byte, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, nil, fmt.Errorf("pki: %w", err)
	}
	c, err := parseCertPEM(b)
	if err != nil {
		return nil, nil, fmt.Errorf("pki: %s: %w", path, err)
	}
	return c, b, nil
}

func parseCertPEM(b []byte) (*x509.Certificate, error) {
	blk, _ := pem.Decode(b)
	if blk == nil || blk.Type != "CERTIFICATE" {
		return nil, errors.New("not a PEM certificate")
	}
	return x509.ParseCertificate(blk.Bytes)
}

// hasURI reports whether cert carries the URI SAN u.
func hasURI(cert *x509.Certificate, u *url.URL) bool {
	for _, x := range cert.URIs {
		if x.String() == u.String() {
			return true
		}
	}
	return false
}

// ServerCert issues a certificate for the daemon's HTTPS API, valid for
// hosts (DNS names or IP addresses), kept in memory only: a new one is
// issued at every start, so it always names the addresses of the day.
func (p *PKI) ServerCert(hosts []string) (tls.Certificate, error) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return tls.Certificate{}, err
	}
	sn, err := serial()
	if err != nil {
		return tls.Certificate{}, err
	}
	now := time.Now()
	tmpl := &x509.Certificate{
		SerialNumber: sn,
		Subject:      pkix.Name{CommonName: "lockstep api", Organization: []string{"Lockstep"}},
		NotBefore:    now.Add(-time.Hour),
		NotAfter:     now.Add(365 * 24 * time.Hour),
		KeyUsage:     x509.KeyUsageDigitalSignature,
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
	}
	for _, h := range hosts {
		if ip := net.ParseIP(h); ip != nil {
			tmpl.IPAddresses = append(tmpl.IPAddresses, ip)
		} else if h != "" {
			tmpl.DNSNames = append(tmpl.DNSNames, h)
		}
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, p.CA, &key.PublicKey, p.caKey)
	if err != nil {
		return tls.Certificate{}, fmt.Errorf("pki: API certificate: %w", err)
	}
	return tls.Certificate{Certificate: [][]byte{der}, PrivateKey: key}, nil
}
