package sdk

import (
	"os"
	"os/signal"
	"syscall"
	"time"

	"github.com/hashicorp/go-plugin"
	"google.golang.org/grpc"
)

// parentPoll is how often a plugin checks that its host is alive.
const parentPoll = 100 * time.Millisecond

// Serve serves p to the host over gRPC and returns when the host shuts the
// plugin down. Call it once from main:
//
//	func main() { sdk.Serve(myPlugin{}) }
//
// Serve runs the watchdog: an app frozen by p is thawed when its hold
// elapses without a Thaw, when the host's connection closes, and when the
// host process dies (the plugin then exits). Run by hand, outside a host,
// the binary prints a note and exits 1.
func Serve(p Plugin) {
	// A dead host's stderr pipe must not kill the plugin (SIGPIPE) in the
	// middle of thawing: the write fails and the thaw goes on.
	signal.Ignore(syscall.SIGPIPE)
	wd := newWatchdog(p, nil)
	go watchParent(wd, parentPoll, os.Getppid, func() { os.Exit(3) })
	hs := Handshake
	hs.ProtocolVersion = uint(servedProtocol())
	plugin.Serve(&plugin.ServeConfig{
		HandshakeConfig: hs,
		Plugins:         plugin.PluginSet{PluginName: &GRPCPlugin{Impl: p, wd: wd}},
		GRPCServer: func(opts []grpc.ServerOption) *grpc.Server {
			return grpc.NewServer(append(opts, grpc.StatsHandler(wd))...)
		},
	})
	wd.thawAll("the plugin is shutting down")
	wd.thawing.Wait()
}
