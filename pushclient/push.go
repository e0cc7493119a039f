package pushclient

import (
	"context"
	"errors"
	"fmt"
	"io"
	"slices"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"

	longhaulv1 "github.com/longhaul/longhaul/api/longhaul/v1"
)

// Result says how far a Push got. It is filled in on error too.
type Result struct {
	// Accepted is how many insights are known durable: those of the
	// acknowledged streams, and of a stream an edge took in part before
	// refusing the rest as over this client's rate; always a prefix of
	// Push's slice. It is the slice's length when Push returns nil. (After
	// an InputError, the chunks of the failed stream before the bad one
	// may be durable too.) For a Writer, a prefix of the insights in the
	// order written (see Writer.Close).
	Accepted int
	// Streams is the number of acknowledged PushStream calls.
	Streams int
	// Attempts is the number of PushStream calls made, failed ones
	// included: Attempts - Streams were sent again.
	Attempts int
	// Edges are the edges that acknowledged streams, in the order first
	// used.
	Edges []string
	// LastEdge, FirstSeq and LastSeq: the edge that acknowledged the last
	// stream, and the sequence numbers (inclusive, the edge's own) it gave
	// that stream's insights (those sent in its last attempt, when a rate
	// limit made the client send the rest of a stream on its own).
	LastEdge          string
	FirstSeq, LastSeq uint64
}

// errNoProgress is the cause of an attempt abandoned by ProgressTimeout.
var errNoProgress = errors.New("pushclient: no progress")

// Push makes insights durable on some edge and returns once they all are.
// It sends them in streams of StreamInsights insights (PushStream, in
// chunks of ChunkInsights), one stream at a time; a stream counts once the
// edge acknowledges it, and only then is it durable. A stream that fails
// for a reason of the edge or the link (Unavailable, a full WAL,
// DeadlineExceeded of the attempt, a lost connection) is sent again whole,
// as the edge may have written any part of it, to the next edge the Picker
// offers; once every edge failed, after a backoff (and never before an
// edge's retry hint). Sending an insight twice is harmless: the primary
// keeps the last observation of each key.
//
// Push returns nil only when every insight is in an acknowledged stream.
// It returns at once an *InputError when an edge refuses the input as
// invalid (its Index and Field name the insight in insights), and a
// wrapped status error for other errors that sending again would not cure
// (ResourceExhausted other than a full WAL: a chunk over the size limit of
// a message).
// Once ctx ends it returns an error wrapping ctx.Err(). A nil insight is
// an InputError; no insights is a no-op. insights must not change until
// Push returns.
func (c *Client) Push(ctx context.Context, insights []*longhaulv1.Insight) (Result, error) {
	return c.push(ctx, insights, 0)
}

// push is Push of insights that start at index base of what the caller
// counts in (a Writer's segment): its errors name insights from there.
func (c *Client) push(ctx context.Context, insights []*longhaulv1.Insight, base int) (res Result, err error) {
	start := time.Now()
	defer func() { c.observe("Push", start, err) }()
	if i := slices.Index(insights, nil); i >= 0 {
		return res, clientInputError(fmt.Sprintf("insights[%d]", base+i), base+i, "must not be null")
	}
	cl := &call{method: "PushStream"}
	for off := 0; off < len(insights); off += c.cfg.StreamInsights {
		seg := insights[off:min(off+c.cfg.StreamInsights, len(insights))]
		var resp *longhaulv1.PushResponse
		// sent counts the insights of seg an edge took before it refused
		// the rest as over this client's rate: durable (the edge says so),
		// so not sent again. Sending them again would spend the rate the
		// edge's hint waited for, and a stream larger than what the hint
		// covers would never get through.
		sent := 0
		edge, permanent, err := c.retry(ctx, cl, func(ctx context.Context, ingest longhaulv1.IngestClient, addr string) error {
			var err error
			resp, err = c.stream(ctx, ingest, seg[sent:])
			if err != nil && rateLimited(err) {
				if n, _ := acceptedBefore(status.Convert(err)); n > 0 && n < len(seg)-sent {
					sent += n
					c.metrics.insights.WithLabelValues(addr).Add(float64(n))
				}
			}
			return err
		})
		res.Attempts = cl.attempts
		if err != nil {
			res.Accepted += sent
			if permanent {
				return res, c.refused(cl, edge, err, seg[sent:], base+off+sent)
			}
			return res, err
		}
		c.metrics.insights.WithLabelValues(edge).Add(float64(len(seg) - sent))
		res.Accepted += len(seg)
		res.Streams++
		if !slices.Contains(res.Edges, edge) {
			res.Edges = append(res.Edges, edge)
		}
		res.LastEdge, res.FirstSeq, res.LastSeq = edge, resp.GetFirstSeq(), resp.GetLastSeq()
	}
	return res, nil
}

// stream sends seg as one PushStream and returns the edge's answer. It is
// abandoned (DeadlineExceeded) when a chunk or the answer takes longer
// than ProgressTimeout.
func (c *Client) stream(ctx context.Context, ingest longhaulv1.IngestClient, seg []*longhaulv1.Insight) (*longhaulv1.PushResponse, error) {
	ctx, cancel := context.WithCancelCause(ctx)
	defer cancel(nil)
	stall := time.AfterFunc(c.cfg.ProgressTimeout, func() { cancel(errNoProgress) })
	defer stall.Stop()
	resp, err := c.send(ctx, ingest, seg, stall)
	if err != nil && context.Cause(ctx) == errNoProgress {
		err = status.Errorf(codes.DeadlineExceeded, "pushclient: no progress for %s: %v", c.cfg.ProgressTimeout, status.Convert(err).Message())
	}
	return resp, err
}

func (c *Client) send(ctx context.Context, ingest longhaulv1.IngestClient, seg []*longhaulv1.Insight, stall *time.Timer) (*longhaulv1.PushResponse, error) {
	stream, err := ingest.PushStream(ctx)
	if err != nil {
		return nil, err
	}
	for lo := 0; lo < len(seg); lo += c.cfg.ChunkInsights {
		err := stream.Send(&longhaulv1.PushRequest{Insights: seg[lo:min(lo+c.cfg.ChunkInsights, len(seg))]})
		if errors.Is(err, io.EOF) {
			break // the edge ended the stream; CloseAndRecv says why
		}
		if err != nil {
			return nil, err
		}
		stall.Reset(c.cfg.ProgressTimeout)
	}
	resp, err := stream.CloseAndRecv()
	if err != nil {
		return nil, withTrailerHint(err, stream.Trailer())
	}
	if resp.GetAccepted() != int64(len(seg)) {
		return nil, status.Errorf(codes.Internal, "pushclient: the edge acknowledged %d insights of a stream of %d", resp.GetAccepted(), len(seg))
	}
	return resp, nil
}

// Complete records the end of a scan on some edge (CompleteScan), with the
// retries, failover and errors of Push. Send it after Push returned for all
// of the scan's insights.
func (c *Client) Complete(ctx context.Context, completion *longhaulv1.ScanCompletion) (err error) {
	start := time.Now()
	defer func() { c.observe("Complete", start, err) }()
	if completion == nil {
		return clientInputError("completion", -1, "is required")
	}
	cl := &call{method: "CompleteScan"}
	req := &longhaulv1.CompleteScanRequest{Completion: completion}
	edge, permanent, err := c.retry(ctx, cl, func(ctx context.Context, ingest longhaulv1.IngestClient, _ string) error {
		ctx, cancel := context.WithTimeoutCause(ctx, c.cfg.ProgressTimeout, errNoProgress)
		defer cancel()
		var trailer metadata.MD
		_, err := ingest.CompleteScan(ctx, req, grpc.Trailer(&trailer))
		if err != nil && context.Cause(ctx) == errNoProgress {
			return status.Errorf(codes.DeadlineExceeded, "pushclient: no answer in %s", c.cfg.ProgressTimeout)
		}
		return withTrailerHint(err, trailer)
	})
	if err != nil && permanent {
		return c.refused(cl, edge, err, nil, 0)
	}
	return err
}

// refused is the error of a call an edge answered with an error sending
// again would not cure. seg is the stream's insights, and offset the index
// of its first one in Push's slice, or among a Writer's insights (nil and 0
// for a completion).
func (c *Client) refused(cl *call, edge string, err error, seg []*longhaulv1.Insight, offset int) error {
	switch status.Code(err) {
	case codes.InvalidArgument:
		return inputError(edge, err, offset)
	case codes.PermissionDenied:
		// A token scoped to other accounts: name the insight by its index
		// in Push's slice.
		if field, reason, ok := deniedField(err, offset); ok {
			return fmt.Errorf("pushclient: edge %s refused %s: %s: %w", edge, field, reason, err)
		}
	case codes.ResourceExhausted:
		// Not a full WAL (retryable): a request over the size limit of a
		// message. gRPC refuses it before the edge sees it, and says
		// neither which request it was nor how many came before.
		if cl.method == "PushStream" {
			return fmt.Errorf("pushclient: PushStream: edge %s refused a request of the stream of insights[%d:%d] as too large "+
				"(lower ChunkInsights, now %d, or shrink the insights): %w", edge, offset, offset+len(seg), c.cfg.ChunkInsights, err)
		}
	}
	return fmt.Errorf("pushclient: %s: edge %s: %w", cl.method, edge, err)
}

// clientInputError is input the client refuses before sending it.
func clientInputError(field string, index int, reason string) *InputError {
	return &InputError{Index: index, Field: field, Reason: reason, Err: status.Error(codes.InvalidArgument, field+": "+reason)}
}
