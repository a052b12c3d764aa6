package api

import (
	"context"
	"net/url"
	"time"
)

// Agents run plugins on protected hosts (see orchestrator/agent); their
// endpoints:
//
//	POST   /v1/agents/tokens  AgentTokenRequest -> AgentToken
//	POST   /v1/agents/enroll  AgentEnrollRequest -> AgentEnrollResponse
//	                          (no API token: the enrolment token's MAC
//	                          authenticates it)
//	GET    /v1/agents         -> []Agent (each probed now)
//	DELETE /v1/agents/{name}  -> Agent (forgotten, certificate revoked)

// AgentTokenRequest asks for a single-use enrolment token.
type AgentTokenRequest struct {
	Name string        `json:"name"`
	TTL  time.Duration `json:"ttl,omitempty"` // default one hour
	// Replace lets the token re-enrol an agent of the same name, revoking
	// its old certificate.
	Replace bool `json:"replace,omitempty"`
}

// AgentToken is an enrolment token and what the agent needs to trust the
// daemon: the CA's fingerprint, to be carried to the host out of band.
type AgentToken struct {
	Name          string    `json:"name"`
	Token         string    `json:"token"` // ID.SECRET; a secret, shown once
	Expires       time.Time `json:"expires"`
	CAFingerprint string    `json:"ca_fingerprint"`
}

// AgentEnrollRequest is sent by `lockstep agent enroll`. The token's
// secret does not travel: MAC is HMAC-SHA256 keyed with it over the name,
// the advertised address and the CSR.
type AgentEnrollRequest struct {
	Name      string `json:"name"`
	Advertise string `json:"advertise"` // host:port the daemon dials
	CSR       string `json:"csr"`       // PEM certificate request
	TokenID   string `json:"token_id"`
	MAC       string `json:"mac"`
}

// AgentEnrollResponse carries the agent's certificate and the CA.
type AgentEnrollResponse struct {
	Name   string `json:"name"`
	Cert   string `json:"cert"` // PEM
	CA     string `json:"ca"`   // PEM
	Serial string `json:"serial"`
}

// Agent states.
const (
	AgentOK   = "ok"   // answered the last probe or call
	AgentLost = "lost" // did not; its apps' markers are crash-consistent
)

// Agent is an enrolled agent as the daemon sees it.
type Agent struct {
	Name      string    `json:"name"`
	Advertise string    `json:"advertise"`
	Serial    string    `json:"serial"`
	Enrolled  time.Time `json:"enrolled"`
	NotAfter  time.Time `json:"not_after"`
	State     string    `json:"state"`
	Detail    string    `json:"detail,omitempty"` // why it is lost
	Since     time.Time `json:"since,omitzero"`   // in this state since
	Version   string    `json:"version,omitempty"`
	Plugins   []string  `json:"plugins,omitempty"` // built-in and installed
	Services  []string  `json:"services"`          // with an app on it
}

// AgentToken asks the daemon for an enrolment token.
func (c *Client) AgentToken(ctx context.Context, req AgentTokenRequest) (AgentToken, error) {
	var t AgentToken
	return t, c.Do(ctx, "POST", "/v1/agents/tokens", req, &t)
}

// Agents lists the enrolled agents, each probed now.
func (c *Client) Agents(ctx context.Context) ([]Agent, error) {
	var a []Agent
	return a, c.Do(ctx, "GET", "/v1/agents", nil, &a)
}

// RemoveAgent forgets an agent and revokes its certificate.
func (c *Client) RemoveAgent(ctx context.Context, name string) (Agent, error) {
	var a Agent
	return a, c.Do(ctx, "DELETE", "/v1/agents/"+url.PathEscape(name), nil, &a)
}

// EnrollAgent sends an enrolment request to the daemon at addr; it needs
// no API token.
func EnrollAgent(ctx context.Context, addr string, req AgentEnrollRequest) (AgentEnrollResponse, error) {
	var r AgentEnrollResponse
	return r, New(addr, "").Do(ctx, "POST", "/v1/agents/enroll", req, &r)
}
