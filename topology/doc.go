// Package topology is the cluster of edges: each edge gossips (SWIM, with
// hashicorp/memberlist) who it is, where it listens, how far behind it is
// and whether it meets its budgets; every edge knows every other, and
// checkers use that to push to the nearest healthy edge.
//
//	n, err := topology.Start(topology.Config{Region: "eu", NodeID: "n1",
//		BindAddr: "10.0.0.5:7946", Join: []string{"10.0.0.6:7946"},
//		GRPCAddr: "10.0.0.5:7300", HTTPAddr: "10.0.0.5:7301", Meta: edgeStatus})
//	…
//	members := n.Members() // sorted by name, this edge included
//	…
//	n.Leave(5 * time.Second) // the others list it as left, not dead
//	n.Shutdown()
//
// An edge (package edge) runs a Node when it is given a gossip address
// (`longhaul edge --gossip-listen --join --gossip-profile`), and answers
// longhaul.v1.Topology from it: gRPC ListMembers and GET /v1/topology
// (Server, Response). Without one it is a cluster of one (Standalone).
// A checker's push client chooses edges with a Picker
// (`longhaul checker --region`).
//
// # What a member advertises
//
// Its memberlist node metadata is a longhaul.v1.NodeMeta (protobuf,
// api/longhaul/v1/topology.proto): region, node id, gRPC and HTTP
// addresses, the WAL's backlog (records, bytes, age of the oldest), within
// budget or not and which budget it misses, full (the WAL refuses pushes),
// draining, leaving, and the sender's clock. memberlist allows 512 bytes:
// Start refuses names and addresses that leave less than 32 bytes for the
// budget reason with the backlog at its largest, and the reason is cut to
// fit (120 bytes at the most). The status comes from Config.Meta and is
// re-advertised every MetaInterval (1s): a heartbeat, gossiped to every
// member.
//
// # States
//
// memberlist keeps its own suspicion to itself (the Node it hands out
// always says alive), so a member's State here is derived:
//
//   - alive: memberlist counts it a member and its heartbeat was heard
//     within SuspectAfter;
//   - suspect: memberlist still counts it a member, but no heartbeat came
//     for SuspectAfter (10s wan, 5s lan, 1s local): dying, or cut off;
//   - dead: memberlist's failure detector declared it failed;
//   - left: memberlist saw it go after it said it was leaving (Leave
//     sends each member a message, and advertises it in its metadata,
//     before memberlist's own leave, whose message the delegates do not
//     see as such).
//
// Members that died or left stay listed for GoneRetention (10m), and come
// back alive when they return (a restarted edge refutes its death). The
// heartbeats also refute suspicions: each is an alive message of a higher
// incarnation, so a member whose link is slow but not broken is suspected
// and cleared again, never declared dead (see the tests).
//
// # Gossip profiles and failure detection
//
// Every member of a cluster must use the same profile:
//
//	profile  probe      probe    suspicion  max      gossip       push-pull
//	         interval   timeout  mult       mult     interval×n
//	wan      5s         2s       6          6        500ms×4      60s      (default)
//	lan      1s         400ms    4          6        200ms×3      30s
//	local    200ms      50ms     4          3        50ms×3       5s       (tests, loopback)
//
// wan and lan are memberlist's DefaultWANConfig and DefaultLANConfig with a
// shorter probe timeout: an indirect probe's nack comes after two probe
// timeouts, and must arrive before the probe interval ends, or the prober
// counts itself unhealthy and slows down. Config.ProbeInterval,
// ProbeTimeout and SuspicionMult override a profile.
//
// A member that stops answering (killed, cut off) is declared dead by
// every live member within Config.DetectionBound(n), n members:
//
//	(2n−2) × probe interval   each member probes the others round robin, in
//	                          an order shuffled every round: within 2n−3
//	                          intervals it probes the silent one again, and
//	                          that probe fails within one more;
//	+ suspicion timeout       mult × max(1, log10 n) × probe interval, up to
//	                          max mult times that until others confirm the
//	                          suspicion (the minimum from the start when
//	                          fewer than mult members can confirm).
//
// That is 50s for 3 edges, 70s for 5 and 4m30s for 10 with wan; 8s, 32s and
// 42s with lan; 1.6s, 4s and 6s with local — assuming healthy observers
// (memberlist's Lifeguard slows an observer that misses its own deadlines
// by up to 8 probe intervals). It is a worst case: with n−1 members
// probing, the first failed probe comes within about one interval, the
// confirmations follow, and the first member to declare the death gossips
// it to the rest within a few gossip intervals. On loopback (local, 3 to 5
// members) the tests measure 1.1–1.6s. Checkers do not wait for it: a push
// that fails moves on to another edge at once (package pushclient), and
// the Picker keeps away from that edge for its cooldown.
//
// # Concurrency
//
// A Node's and a Picker's methods are safe for concurrent use. Config.Meta
// is called from the Node's goroutines (and from Local and Members) and
// must not block; OnChange is called from one goroutine of the Node's, in
// order. Shutdown stops every goroutine the Node started; memberlist's own
// probe under way ends within its probe interval after.
package topology
