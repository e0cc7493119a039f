package edge

import (
	"context"
	"sync/atomic"
	"time"

	"github.com/grpc-ecosystem/grpc-gateway/v2/runtime"

	longhaulv1 "github.com/longhaul/longhaul/api/longhaul/v1"
	"github.com/longhaul/longhaul/topology"
	"github.com/longhaul/longhaul/wal"
)

// leaveTimeout bounds how long Stop waits for the news that the edge leaves
// the cluster to go out.
const leaveTimeout = 5 * time.Second

// edgeTopology is the edge's membership of the cluster of edges.
type edgeTopology struct {
	node     *topology.Node
	server   *topology.Server
	draining atomic.Bool
}

// startTopology joins the gossip cluster when Config.Gossip.BindAddr is set,
// advertising the edge's listeners (so call it once they listen); without
// it the edge is a cluster of one. Either way the Topology service
// (gRPC and GET /v1/topology) answers from it.
func (s *Service) startTopology() error {
	s.topo = &edgeTopology{}
	gc := s.cfg.Gossip
	gc.Region, gc.NodeID, gc.NodeName = s.cfg.Region, s.cfg.NodeID, s.cfg.EdgeID()
	gc.GRPCAddr, gc.HTTPAddr = s.Addr(), s.HTTPAddr()
	if gc.Logger == nil {
		gc.Logger = s.log
	}
	l, topo := s.wal, s.topo
	gc.Meta = func() topology.Status {
		ts := topologyStatus(l.Stats(), topo.draining.Load())
		ts.WithinBudget, ts.Over = s.WithinBudget()
		return ts
	}
	var err error
	if gc.BindAddr == "" {
		s.topo.node, err = topology.Standalone(gc)
	} else {
		s.topo.node, err = topology.Start(gc)
	}
	if err != nil {
		return err
	}
	s.topo.server = topology.NewServer(s.topo.node)
	return nil
}

// topologyStatus is what the edge tells the cluster about itself.
func topologyStatus(st wal.Stats, draining bool) topology.Status {
	ts := topology.Status{
		BacklogRecords: int64(st.Records), BacklogBytes: st.Bytes,
		WithinBudget: true, // the caller puts the budget's verdict here
		Full:         st.Failed != nil || st.Bytes >= st.QuotaBytes,
		Draining:     draining,
	}
	if !st.OldestAppendedAt.IsZero() {
		ts.OldestUnshipped = time.Since(st.OldestAppendedAt)
	}
	return ts
}

// registerTopologyHTTP serves GET /v1/topology through the gateway.
func (s *Service) registerTopologyHTTP(ctx context.Context, gw *runtime.ServeMux) error {
	return longhaulv1.RegisterTopologyHandlerServer(ctx, gw, s.topo.server)
}

// leaveTopology tells the cluster the edge is draining and leaves it, so
// that checkers move away before the edge stops taking pushes.
func (s *Service) leaveTopology() {
	if s.topo == nil || s.topo.node == nil {
		return
	}
	s.topo.draining.Store(true)
	if err := s.topo.node.Leave(leaveTimeout); err != nil {
		s.log.Warn("edge: leaving the cluster", "err", err)
	}
}

// stopTopology stops gossiping (at once: without leaveTopology before, the
// others find the edge dead).
func (s *Service) stopTopology() {
	if s.topo == nil || s.topo.node == nil {
		return
	}
	if err := s.topo.node.Shutdown(); err != nil {
		s.log.Warn("edge: stop gossip", "err", err)
	}
}

// Topology returns the edge's membership of the cluster of edges.
func (s *Service) Topology() *topology.Node { return s.topo.node }
