package sdk

import (
	"strconv"

	"github.com/hashicorp/go-plugin"
)

// ProtocolVersion is the version of the host-plugin protocol this SDK
// speaks. The host refuses a plugin that speaks another.
const ProtocolVersion = 1

// Handshake is the go-plugin handshake shared by the host and every plugin.
// The cookie only keeps a user from running a plugin binary by hand; it is
// not a security measure (the host checks each binary's SHA-256 instead).
//
// Protocol history (bump ProtocolVersion and add a line for every change
// that an old host or an old plugin cannot understand):
//
//	1  lockstep.plugin.v1: Info, ConfigSchema, Validate, Prepare, Freeze
//	   (evidence as JSON, at most 64 KiB), Thaw, Health, Stop, Start; typed
//	   config values; gRPC only.
var Handshake = plugin.HandshakeConfig{
	ProtocolVersion:  ProtocolVersion,
	MagicCookieKey:   "LOCKSTEP_PLUGIN",
	MagicCookieValue: "d2b1c0a4-quiesce-7f1e",
}

// PluginName is the name the quiescer is registered under in go-plugin's
// plugin set.
const PluginName = "quiescer"

// protocolOverride, when set at link time
// (-ldflags "-X github.com/lockstep-io/lockstep/plugins/sdk.protocolOverride=2"),
// makes Serve claim another protocol version. It exists only so that tests
// can build a plugin the host must refuse.
var protocolOverride string

// servedProtocol is the protocol version Serve announces.
func servedProtocol() int {
	if n, err := strconv.Atoi(protocolOverride); err == nil && n > 0 {
		return n
	}
	return ProtocolVersion
}
