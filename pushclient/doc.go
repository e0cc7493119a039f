// Package pushclient is the client checkers push insights with: it makes
// them durable on an edge (longhaul.v1.Ingest) and rides out edges that
// stop, fill up, slow down or drop off the network.
//
//	c, err := pushclient.New(pushclient.Config{Edges: []string{"edge-a:7300", "edge-b:7300"}})
//	…
//	defer c.Close()
//	res, err := c.Push(ctx, insights) // nil: every insight is on an edge's disk
//	…
//	err = c.Complete(ctx, &longhaulv1.ScanCompletion{…})
//
// # Guarantees
//
// Push returns nil only when every insight was in a PushStream the edge
// acknowledged: an acknowledged stream is fsynced in the edge's WAL and will
// reach the primary. A stream that was not acknowledged may have been
// written in part or in whole, so it is sent again whole (to another edge,
// or later): insights are upserted last-writer-wins on observed_at, so a
// resent insight changes nothing. The same holds for Complete.
//
// What is retried: Unavailable (edge stopping, connection refused or lost),
// ResourceExhausted when the edge's WAL is full (a google.rpc.ErrorInfo of
// reason WAL_FULL, or a retry hint; the hint — a google.rpc.RetryInfo
// detail or a grpc-retry-pushback-ms trailer — keeps the client off that
// edge until it ends), DeadlineExceeded of one attempt
// (Config.ProgressTimeout), Aborted, and a call cut by a connection
// closing. An attempt that fails moves on to the next edge at once; once
// every edge failed in a round, the client backs off (jittered,
// exponential, MinBackoff..MaxBackoff) before the next round. Everything
// else returns at once: InvalidArgument as an *InputError that names the
// insight by its index in the slice given to Push, other codes as a
// wrapped status error — among them ResourceExhausted without WAL_FULL or
// RATE_LIMITED, gRPC's refusal of a message over the edge's size limit,
// which would be refused again (lower ChunkInsights). When ctx ends, the
// call returns an error wrapping ctx.Err().
//
// An edge that refuses this client as over its rate of insights
// (ResourceExhausted with reason RATE_LIMITED and a retry hint) is not
// failing: the client waits for the hint (plus up to an eighth more, at
// random) and sends the rest of the stream to the same edge again (what
// the edge took before the refusal is durable, and its error says how
// much), without cooling the edge down in the Picker
// (longhaul_pushclient_rate_limited_total counts the waits). Another edge
// would take the load off this client's limit, not off the region.
// Unauthenticated (no token, an unknown one, no client certificate) and
// PermissionDenied (a token scoped to other accounts; the error names the
// insight by its index in the slice given to Push) return at once: the
// same credentials would be refused again.
//
// The client decides on the edge's status details, not its messages: the
// ErrorInfo's reason, the BadRequest's field, and, for a stream refused
// part way, the ErrorInfo's count of insights accepted before the refused
// request (the BadRequest indexes that request). Edges that predate those
// details are understood from their messages.
//
// # Writing while a scan goes on
//
// Push takes a scan's insights once they are all found. A Writer
// (Client.NewWriter) takes them as they are found: Write gathers them and
// pushes each segment of WriterConfig.SegmentInsights in the background,
// with Push's retries and failover, at most WriterConfig.Window segments
// at once, and waits only when that many are under way; Close pushes the
// rest and returns once every segment is acknowledged. Nothing is durable
// until acknowledged, and Close returning nil means everything written is.
// Segments may be acknowledged out of order, which last-writer-wins on
// observed_at makes harmless. A checker beside an edge that acknowledges
// in milliseconds is thus blocked, for a scan of minutes, about as long as
// its last segments take.
//
// # Edges and connections
//
// A Picker chooses the edge of each attempt (by default an OrderedPicker:
// the configured order, skipping edges in cooldown after a failure, back to
// the preferred edge once its cooldown ends and it answers). The client
// keeps one gRPC connection per edge, made on first use, with keepalive
// pings that notice a dead link within KeepaliveTime+KeepaliveTimeout
// (15s by default; gRPC-Go pings every 10s at the most). A connection gRPC holds in TRANSIENT_FAILURE is replaced
// when the Picker chooses its edge again, so that the attempt tests the edge
// as it is now rather than repeating the last connection error.
//
// # Authentication
//
// With Config.Token the client sends `authorization: Bearer TOKEN` with
// every call; over TLS (Config.DialOptions with
// grpc.WithTransportCredentials), or in plain text to loopback addresses
// only, unless Config.AllowInsecureToken. For mutual TLS give the TLS
// credentials a client certificate.
//
// # Concurrency
//
// A Client is safe for concurrent use. Each call sends its streams one
// after another; run calls concurrently for more throughput. A Push or
// Complete under way when Close is called returns ErrClosed; no goroutine
// of the client outlives Close and the calls under way. A Writer is for
// one goroutine (one scan); several may share a Client. No goroutine of a
// Writer outlives its Close.
package pushclient
