package topology

import (
	"context"

	longhaulv1 "github.com/longhaul/longhaul/api/longhaul/v1"
)

// Server answers longhaul.v1.Topology (gRPC, and HTTP/JSON GET /v1/topology
// through the gateway) from a Node: the one source of both.
type Server struct {
	longhaulv1.UnimplementedTopologyServer
	node *Node
}

// NewServer returns the Topology service of n.
func NewServer(n *Node) *Server { return &Server{node: n} }

// ListMembers implements longhaulv1.TopologyServer.
func (s *Server) ListMembers(context.Context, *longhaulv1.ListMembersRequest) (*longhaulv1.ListMembersResponse, error) {
	return Response(s.node.Name(), s.node.Members()), nil
}
