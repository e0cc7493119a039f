package topology

import (
	"cmp"
	"slices"
	"time"
	"unicode/utf8"

	"github.com/hashicorp/memberlist"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/timestamppb"

	longhaulv1 "github.com/longhaul/longhaul/api/longhaul/v1"
)

// State is a member's state in the cluster.
type State int

// The states. The zero State is StateAlive.
const (
	// StateAlive: a member, heard from within SuspectAfter.
	StateAlive State = iota
	// StateSuspect: memberlist still counts it a member, but its heartbeat
	// was not heard for SuspectAfter: it may be dead, or its link slow.
	StateSuspect
	// StateDead: memberlist's failure detector declared it failed.
	StateDead
	// StateLeft: it said it was leaving, and left.
	StateLeft
)

func (s State) String() string {
	switch s {
	case StateAlive:
		return "alive"
	case StateSuspect:
		return "suspect"
	case StateDead:
		return "dead"
	case StateLeft:
		return "left"
	}
	return "unknown"
}

// Gone tells a member that died or left.
func (s State) Gone() bool { return s == StateDead || s == StateLeft }

// Member is a member of the cluster as one member sees it.
type Member struct {
	// Name is the member's name in the cluster ("region/node_id").
	Name, Region, NodeID string
	// GRPCAddr and HTTPAddr are the addresses it advertises; GossipAddr
	// is its gossip address.
	GRPCAddr, HTTPAddr, GossipAddr string
	State                          State
	// StateSince is when this member saw it enter State.
	StateSince time.Time
	// Status is what it last reported.
	Status Status
	// Updated is when this member last heard its status.
	Updated time.Time
}

// minOver is the room the metadata keeps for Status.Over at the least.
const minOver = 32

// maxOver bounds Status.Over in the metadata.
const maxOver = 120

// encodeMeta is the member's gossip metadata (longhaulv1.NodeMeta),
// within memberlist.MetaMaxSize: Over is cut to fit.
func encodeMeta(c *Config, grpcAddr, httpAddr string, st Status, leaving bool, now time.Time) []byte {
	m := &longhaulv1.NodeMeta{
		Region: c.Region, NodeId: c.NodeID, Grpc: grpcAddr, Http: httpAddr,
		BacklogRecords: st.BacklogRecords, BacklogBytes: st.BacklogBytes, OldestUnshippedMs: st.OldestUnshipped.Milliseconds(),
		OverBudget: !st.WithinBudget, Over: cut(st.Over, maxOver), Full: st.Full, Draining: st.Draining, Leaving: leaving,
		SentUnixMs: now.UnixMilli(),
	}
	b, _ := proto.MarshalOptions{Deterministic: true}.Marshal(m)
	if excess := len(b) - memberlist.MetaMaxSize; excess > 0 {
		m.Over = cut(m.Over, len(m.Over)-excess-2) // -2: Over's length prefix may shrink by less than its text
		b, _ = proto.MarshalOptions{Deterministic: true}.Marshal(m)
		if len(b) > memberlist.MetaMaxSize { // validate prevents it; never hand memberlist more than it takes
			m.Over = ""
			b, _ = proto.MarshalOptions{Deterministic: true}.Marshal(m)
		}
	}
	return b
}

// cut shortens s to at most n bytes, on a rune boundary.
func cut(s string, n int) string {
	if len(s) <= n {
		return s
	}
	n = max(n, 0)
	for n > 0 && !utf8.RuneStart(s[n]) {
		n--
	}
	return s[:n]
}

// decodeMeta reads a member's metadata; ok is false when it is not ours.
func decodeMeta(b []byte) (*longhaulv1.NodeMeta, bool) {
	m := &longhaulv1.NodeMeta{}
	if err := proto.Unmarshal(b, m); err != nil || m.GetRegion() == "" {
		return nil, false
	}
	return m, true
}

// statusOf is the Status a member's metadata reports.
func statusOf(m *longhaulv1.NodeMeta) Status {
	return Status{
		BacklogRecords: m.GetBacklogRecords(), BacklogBytes: m.GetBacklogBytes(),
		OldestUnshipped: time.Duration(m.GetOldestUnshippedMs()) * time.Millisecond,
		WithinBudget:    !m.GetOverBudget(), Over: m.GetOver(), Full: m.GetFull(), Draining: m.GetDraining(),
	}
}

// Proto is the member as the Topology service answers it.
func (m Member) Proto() *longhaulv1.Member {
	p := &longhaulv1.Member{
		Name: m.Name, Region: m.Region, NodeId: m.NodeID, Grpc: m.GRPCAddr, Http: m.HTTPAddr, Gossip: m.GossipAddr,
		State:          protoState(m.State),
		BacklogRecords: m.Status.BacklogRecords, BacklogBytes: m.Status.BacklogBytes,
		OldestUnshippedSeconds: m.Status.OldestUnshipped.Seconds(),
		WithinBudget:           m.Status.WithinBudget, Over: m.Status.Over, Full: m.Status.Full, Draining: m.Status.Draining,
	}
	if !m.Updated.IsZero() {
		p.Updated = timestamppb.New(m.Updated)
	}
	if !m.StateSince.IsZero() {
		p.StateSince = timestamppb.New(m.StateSince)
	}
	return p
}

// MemberFromProto is the Member a Topology answer describes.
func MemberFromProto(p *longhaulv1.Member) Member {
	m := Member{
		Name: p.GetName(), Region: p.GetRegion(), NodeID: p.GetNodeId(), GRPCAddr: p.GetGrpc(), HTTPAddr: p.GetHttp(), GossipAddr: p.GetGossip(),
		State: fromProtoState(p.GetState()),
		Status: Status{BacklogRecords: p.GetBacklogRecords(), BacklogBytes: p.GetBacklogBytes(),
			OldestUnshipped: time.Duration(p.GetOldestUnshippedSeconds() * float64(time.Second)),
			WithinBudget:    p.GetWithinBudget(), Over: p.GetOver(), Full: p.GetFull(), Draining: p.GetDraining()},
	}
	if p.GetUpdated() != nil {
		m.Updated = p.GetUpdated().AsTime()
	}
	if p.GetStateSince() != nil {
		m.StateSince = p.GetStateSince().AsTime()
	}
	return m
}

func protoState(s State) longhaulv1.MemberState {
	switch s {
	case StateAlive:
		return longhaulv1.MemberState_ALIVE
	case StateSuspect:
		return longhaulv1.MemberState_SUSPECT
	case StateDead:
		return longhaulv1.MemberState_DEAD
	case StateLeft:
		return longhaulv1.MemberState_LEFT
	}
	return longhaulv1.MemberState_MEMBER_STATE_UNSPECIFIED
}

// fromProtoState maps an unknown state to dead: a member one cannot tell
// alive is not one to send work to.
func fromProtoState(s longhaulv1.MemberState) State {
	switch s {
	case longhaulv1.MemberState_ALIVE:
		return StateAlive
	case longhaulv1.MemberState_SUSPECT:
		return StateSuspect
	case longhaulv1.MemberState_LEFT:
		return StateLeft
	}
	return StateDead
}

// Response is the Topology service's answer of member self listing
// members: the members sorted by name, and one summary per region.
func Response(self string, members []Member) *longhaulv1.ListMembersResponse {
	members = slices.Clone(members)
	slices.SortFunc(members, func(a, b Member) int { return cmp.Compare(a.Name, b.Name) })
	resp := &longhaulv1.ListMembersResponse{Self: self}
	byRegion := map[string]*longhaulv1.RegionSummary{}
	for _, m := range members {
		resp.Members = append(resp.Members, m.Proto())
		r := byRegion[m.Region]
		if r == nil {
			r = &longhaulv1.RegionSummary{Region: m.Region}
			byRegion[m.Region] = r
			resp.Regions = append(resp.Regions, r)
		}
		switch m.State {
		case StateAlive:
			r.Alive++
		case StateSuspect:
			r.Suspect++
		case StateDead:
			r.Dead++
		case StateLeft:
			r.Left++
		}
		if m.State.Gone() {
			continue
		}
		r.BacklogRecords += m.Status.BacklogRecords
		r.BacklogBytes += m.Status.BacklogBytes
		r.OldestUnshippedSeconds = max(r.OldestUnshippedSeconds, m.Status.OldestUnshipped.Seconds())
		if !m.Status.WithinBudget {
			r.OverBudget++
		}
		if m.Status.Full {
			r.Full++
		}
		if m.Status.Draining {
			r.Draining++
		}
	}
	slices.SortFunc(resp.Regions, func(a, b *longhaulv1.RegionSummary) int { return cmp.Compare(a.Region, b.Region) })
	return resp
}
