package serve

import (
	"context"
	"errors"
	"net"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/health"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/keepalive"
	"google.golang.org/grpc/reflection"
)

// GRPC is a gRPC server with the health service and reflection (so grpcurl
// works), serving on one listener.
type GRPC struct {
	Server *grpc.Server
	health *health.Server
	served chan error
}

// NewGRPC returns a server with health and reflection registered. Clients
// may ping every 5s at the most, also between calls; opts come after that.
func NewGRPC(opts ...grpc.ServerOption) *GRPC {
	opts = append([]grpc.ServerOption{
		grpc.KeepaliveEnforcementPolicy(keepalive.EnforcementPolicy{MinTime: 5 * time.Second, PermitWithoutStream: true}),
	}, opts...)
	g := &GRPC{Server: grpc.NewServer(opts...), health: health.NewServer(), served: make(chan error, 1)}
	healthpb.RegisterHealthServer(g.Server, g.health)
	reflection.Register(g.Server)
	return g
}

// Serve marks the server and the named services SERVING and serves ln in
// the background.
func (g *GRPC) Serve(ln net.Listener, services ...string) {
	for _, s := range append([]string{""}, services...) {
		g.health.SetServingStatus(s, healthpb.HealthCheckResponse_SERVING)
	}
	go func() { g.served <- g.Server.Serve(ln) }()
}

// Draining marks every service NOT_SERVING, so health checks send clients
// elsewhere while the calls under way finish.
func (g *GRPC) Draining() { g.health.Shutdown() }

// Stop waits up to timeout (or until ctx ends) for the calls under way,
// then closes what is left, and returns what Serve returned. Call it once,
// after Serve.
func (g *GRPC) Stop(ctx context.Context, timeout time.Duration) error {
	g.health.Shutdown()
	stopped := make(chan struct{})
	go func() { g.Server.GracefulStop(); close(stopped) }()
	timer := time.NewTimer(timeout)
	defer timer.Stop()
	select {
	case <-stopped:
	case <-timer.C:
		g.Server.Stop()
		<-stopped
	case <-ctx.Done():
		g.Server.Stop()
		<-stopped
	}
	if err := <-g.served; err != nil && !errors.Is(err, grpc.ErrServerStopped) {
		return err
	}
	return nil
}
