package sdk

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/hashicorp/go-plugin"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	pb "github.com/lockstep-io/lockstep/plugins/proto/lockstep/plugin/v1"
)

// ErrEvidenceTooLarge is returned when a Freeze's evidence exceeds
// MaxEvidence as JSON. The SDK thaws the app before returning it.
var ErrEvidenceTooLarge = errors.New("plugin: evidence too large")

// ErrUnreachable is returned by a call whose plugin process could not be
// reached or went away during the call.
var ErrUnreachable = errors.New("plugin: process unreachable")

// GRPCPlugin adapts Plugin to go-plugin. The host uses it with a nil Impl
// to get a client; Serve uses it with the vendor's implementation.
type GRPCPlugin struct {
	plugin.NetRPCUnsupportedPlugin
	Impl Plugin
	wd   *watchdog
}

var _ plugin.GRPCPlugin = (*GRPCPlugin)(nil)

// GRPCServer registers the plugin's gRPC service.
func (p *GRPCPlugin) GRPCServer(_ *plugin.GRPCBroker, s *grpc.Server) error {
	wd := p.wd
	if wd == nil {
		wd = newWatchdog(p.Impl, nil)
	}
	pb.RegisterPluginServer(s, &grpcServer{impl: p.Impl, wd: wd})
	return nil
}

// GRPCClient returns a Plugin that calls the plugin process.
func (p *GRPCPlugin) GRPCClient(_ context.Context, _ *plugin.GRPCBroker, c *grpc.ClientConn) (any, error) {
	return &grpcClient{c: pb.NewPluginClient(c)}, nil
}

// PluginSet is the go-plugin plugin set a host dispenses PluginName from.
func PluginSet() plugin.PluginSet {
	return plugin.PluginSet{PluginName: &GRPCPlugin{}}
}

// toStatus carries the sentinel errors a host acts on across the wire.
func toStatus(err error) error {
	if err == nil {
		return nil
	}
	code := codes.Unknown
	switch {
	case errors.Is(err, ErrUnsupported):
		code = codes.Unimplemented
	case errors.Is(err, ErrEvidenceTooLarge):
		code = codes.ResourceExhausted
	case errors.Is(err, context.DeadlineExceeded):
		code = codes.DeadlineExceeded
	case errors.Is(err, context.Canceled):
		code = codes.Canceled
	}
	return status.Error(code, err.Error())
}

// remoteError is an error from the plugin process; it unwraps to the
// sentinel its gRPC code stands for.
type remoteError struct {
	msg      string
	sentinel error
}

func (e *remoteError) Error() string { return e.msg }
func (e *remoteError) Unwrap() error { return e.sentinel }

func fromStatus(err error) error {
	if err == nil {
		return nil
	}
	st, ok := status.FromError(err)
	if !ok {
		return err
	}
	var sentinel error
	switch st.Code() {
	case codes.Unimplemented:
		sentinel = ErrUnsupported
	case codes.ResourceExhausted:
		sentinel = ErrEvidenceTooLarge
	case codes.DeadlineExceeded:
		sentinel = context.DeadlineExceeded
	case codes.Canceled:
		sentinel = context.Canceled
	case codes.Unavailable:
		sentinel = ErrUnreachable
	}
	return &remoteError{msg: st.Message(), sentinel: sentinel}
}

// grpcServer runs in the plugin process.
type grpcServer struct {
	pb.UnimplementedPluginServer
	impl Plugin
	wd   *watchdog
}

func (s *grpcServer) Info(ctx context.Context, _ *pb.InfoRequest) (*pb.InfoResponse, error) {
	in, err := s.impl.Info(ctx)
	if err != nil {
		return nil, toStatus(err)
	}
	// The SDK, not the vendor, knows which protocol it speaks.
	in.Protocol = servedProtocol()
	return &pb.InfoResponse{Name: in.Name, Version: in.Version, Protocol: int32(in.Protocol), Handles: in.Handles}, nil
}

func (s *grpcServer) ConfigSchema(ctx context.Context, _ *pb.ConfigSchemaRequest) (*pb.ConfigSchemaResponse, error) {
	sc, err := s.impl.ConfigSchema(ctx)
	if err != nil {
		return nil, toStatus(err)
	}
	out, err := schemaToProto(sc)
	return out, toStatus(err)
}

func (s *grpcServer) Validate(ctx context.Context, r *pb.AppRequest) (*pb.ValidateResponse, error) {
	diags, err := s.impl.Validate(ctx, appFromProto(r.GetApp()))
	if err != nil {
		return nil, toStatus(err)
	}
	out := &pb.ValidateResponse{}
	for _, d := range diags {
		out.Diagnostics = append(out.Diagnostics, &pb.Diagnostic{Attribute: d.Attribute, Summary: d.Summary, Detail: d.Detail})
	}
	return out, nil
}

func (s *grpcServer) Prepare(ctx context.Context, r *pb.AppRequest) (*pb.Empty, error) {
	return &pb.Empty{}, toStatus(s.impl.Prepare(ctx, appFromProto(r.GetApp())))
}

func (s *grpcServer) Freeze(ctx context.Context, r *pb.FreezeRequest) (*pb.FreezeResponse, error) {
	ev, err := s.wd.freeze(ctx, appFromProto(r.GetApp()), time.Duration(r.GetHoldNanos()))
	if err != nil {
		return nil, toStatus(err)
	}
	return &pb.FreezeResponse{EvidenceJson: ev}, nil
}

func (s *grpcServer) Thaw(ctx context.Context, r *pb.AppRequest) (*pb.Empty, error) {
	return &pb.Empty{}, toStatus(s.wd.thaw(ctx, appFromProto(r.GetApp())))
}

func (s *grpcServer) Health(ctx context.Context, r *pb.AppRequest) (*pb.HealthResponse, error) {
	h, err := s.impl.Health(ctx, appFromProto(r.GetApp()))
	if err != nil {
		return nil, toStatus(err)
	}
	return &pb.HealthResponse{Ok: h.OK, Detail: h.Detail}, nil
}

func (s *grpcServer) Stop(ctx context.Context, r *pb.AppRequest) (*pb.Empty, error) {
	return &pb.Empty{}, toStatus(s.impl.Stop(ctx, appFromProto(r.GetApp())))
}

func (s *grpcServer) Start(ctx context.Context, r *pb.AppRequest) (*pb.Empty, error) {
	return &pb.Empty{}, toStatus(s.impl.Start(ctx, appFromProto(r.GetApp())))
}

// grpcClient runs in the host and implements Plugin by calling the plugin
// process. Deadlines come from the caller's context.
type grpcClient struct {
	c pb.PluginClient
}

var _ Plugin = (*grpcClient)(nil)

func (c *grpcClient) Info(ctx context.Context) (Info, error) {
	r, err := c.c.Info(ctx, &pb.InfoRequest{})
	if err != nil {
		return Info{}, fromStatus(err)
	}
	return Info{Name: r.GetName(), Version: r.GetVersion(), Protocol: int(r.GetProtocol()), Handles: r.GetHandles()}, nil
}

func (c *grpcClient) ConfigSchema(ctx context.Context) (Schema, error) {
	r, err := c.c.ConfigSchema(ctx, &pb.ConfigSchemaRequest{})
	if err != nil {
		return Schema{}, fromStatus(err)
	}
	return schemaFromProto(r), nil
}

func (c *grpcClient) appRequest(app App) (*pb.AppRequest, error) {
	a, err := appToProto(app)
	if err != nil {
		return nil, err
	}
	return &pb.AppRequest{App: a}, nil
}

func (c *grpcClient) Validate(ctx context.Context, app App) (Diagnostics, error) {
	req, err := c.appRequest(app)
	if err != nil {
		return nil, err
	}
	r, err := c.c.Validate(ctx, req)
	if err != nil {
		return nil, fromStatus(err)
	}
	var out Diagnostics
	for _, d := range r.GetDiagnostics() {
		out = append(out, Diagnostic{Attribute: d.GetAttribute(), Summary: d.GetSummary(), Detail: d.GetDetail()})
	}
	return out, nil
}

func (c *grpcClient) Prepare(ctx context.Context, app App) error {
	req, err := c.appRequest(app)
	if err != nil {
		return err
	}
	_, err = c.c.Prepare(ctx, req)
	return fromStatus(err)
}

func (c *grpcClient) Freeze(ctx context.Context, app App, hold time.Duration) (Evidence, error) {
	a, err := appToProto(app)
	if err != nil {
		return nil, err
	}
	r, err := c.c.Freeze(ctx, &pb.FreezeRequest{App: a, HoldNanos: int64(hold)})
	if err != nil {
		return nil, fromStatus(err)
	}
	ev, err := decodeEvidence(r.GetEvidenceJson())
	if err != nil {
		return nil, fmt.Errorf("freeze of app %q: %w", app.Name, err)
	}
	return ev, nil
}

func (c *grpcClient) Thaw(ctx context.Context, app App) error {
	req, err := c.appRequest(app)
	if err != nil {
		return err
	}
	_, err = c.c.Thaw(ctx, req)
	return fromStatus(err)
}

func (c *grpcClient) Health(ctx context.Context, app App) (Health, error) {
	req, err := c.appRequest(app)
	if err != nil {
		return Health{}, err
	}
	r, err := c.c.Health(ctx, req)
	if err != nil {
		return Health{}, fromStatus(err)
	}
	return Health{OK: r.GetOk(), Detail: r.GetDetail()}, nil
}

func (c *grpcClient) Stop(ctx context.Context, app App) error {
	req, err := c.appRequest(app)
	if err != nil {
		return err
	}
	_, err = c.c.Stop(ctx, req)
	return fromStatus(err)
}

func (c *grpcClient) Start(ctx context.Context, app App) error {
	req, err := c.appRequest(app)
	if err != nil {
		return err
	}
	_, err = c.c.Start(ctx, req)
	return fromStatus(err)
}
