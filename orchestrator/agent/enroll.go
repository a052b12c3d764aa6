package agent

import (
	"context"
	"crypto/ecdsa"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"time"

	"github.com/lockstep-io/lockstep/orchestrator/api"
)

// EnrollConfig says how to enrol an agent.
type EnrollConfig struct {
	Daemon        string // the daemon's API address host:port
	Token         string // from `lockstep agent token NAME`
	CAFingerprint string // printed with the token; checked before trusting the CA
	Name          string // the host name apps use (host = "NAME")
	Advertise     string // host:port the daemon will dial
	Dir           string // the agent's directory
}

// Enroll enrols this host with the daemon: it makes the agent's key here
// (it never leaves the host), sends a certificate request signed with the
// token, checks that the returned CA has the fingerprint given out of band
// and that the certificate is the one asked for, and stores the key (0600),
// the certificate, the CA and agent.json in Dir.
func Enroll(ctx context.Context, cfg EnrollConfig) (Config, error) {
	if err := CheckName(cfg.Name); err != nil {
		return Config{}, err
	}
	if cfg.CAFingerprint == "" {
		return Config{}, errors.New("enrolment: the CA fingerprint printed with the token is required, so that this host trusts the right daemon")
	}
	if cfg.Advertise == "" {
		return Config{}, errors.New("enrolment: the address the daemon dials (--advertise host:port) is required")
	}
	id, secret, err := SplitToken(cfg.Token)
	if err != nil {
		return Config{}, err
	}
	if err := os.MkdirAll(cfg.Dir, 0o700); err != nil {
		return Config{}, fmt.Errorf("agent directory %s: %w", cfg.Dir, err)
	}
	key, csr, err := newKeyAndCSR(cfg.Name)
	if err != nil {
		return Config{}, fmt.Errorf("enrolment: making the agent key: %w", err)
	}
	resp, err := api.EnrollAgent(ctx, cfg.Daemon, api.AgentEnrollRequest{
		Name: cfg.Name, Advertise: cfg.Advertise, TokenID: id,
		CSR: string(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE REQUEST", Bytes: csr})),
		MAC: EnrollMAC(secret, cfg.Name, cfg.Advertise, csr),
	})
	if err != nil {
		return Config{}, fmt.Errorf("enrolment of agent %q with the daemon at %s: %w", cfg.Name, cfg.Daemon, err)
	}
	ca, err := parseCertPEM([]byte(resp.CA))
	if err != nil {
		return Config{}, fmt.Errorf("enrolment: the daemon's CA: %w", err)
	}
	if !SameFingerprint(Fingerprint(ca), cfg.CAFingerprint) {
		return Config{}, fmt.Errorf("enrolment: the daemon at %s presented a CA with fingerprint %s, expected %s: refusing it (wrong daemon, or someone in between)", cfg.Daemon, Fingerprint(ca), cfg.CAFingerprint)
	}
	cert, err := parseCertPEM([]byte(resp.Cert))
	if err != nil {
		return Config{}, fmt.Errorf("enrolment: the agent certificate: %w", err)
	}
	if err := checkIssued(cert, ca, cfg.Name, &key.PublicKey); err != nil {
		return Config{}, err
	}
	if err := writeKey(filepath.Join(cfg.Dir, KeyFile), key); err != nil {
		return Config{}, fmt.Errorf("agent directory %s: %w", cfg.Dir, err)
	}
	if err := api.WriteFileAtomic(filepath.Join(cfg.Dir, CertFile), []byte(resp.Cert), 0o644); err != nil {
		return Config{}, fmt.Errorf("agent directory %s: %w", cfg.Dir, err)
	}
	if err := api.WriteFileAtomic(filepath.Join(cfg.Dir, AgentCAFile), []byte(resp.CA), 0o644); err != nil {
		return Config{}, fmt.Errorf("agent directory %s: %w", cfg.Dir, err)
	}
	c := Config{Name: cfg.Name, Daemon: cfg.Daemon, Advertise: cfg.Advertise, Serial: resp.Serial,
		CAFingerprint: Fingerprint(ca), Enrolled: time.Now().UTC()}
	return c, saveConfig(cfg.Dir, c)
}

// checkIssued verifies that cert is an agent certificate for name and pub,
// signed by ca.
func checkIssued(cert, ca *x509.Certificate, name string, pub *ecdsa.PublicKey) error {
	pool := x509.NewCertPool()
	pool.AddCert(ca)
	if _, err := cert.Verify(x509.VerifyOptions{Roots: pool, DNSName: name, KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}}); err != nil {
		return fmt.Errorf("enrolment: the certificate the daemon returned does not verify for agent %q: %w", name, err)
	}
	if got, ok := cert.PublicKey.(*ecdsa.PublicKey); !ok || !got.Equal(pub) {
		return errors.New("enrolment: the certificate the daemon returned is not for this host's key")
	}
	return nil
}
