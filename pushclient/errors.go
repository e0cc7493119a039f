package pushclient

import (
	"errors"
	"fmt"
	"regexp"
	"strconv"
	"strings"
	"time"

	"google.golang.org/genproto/googleapis/rpc/errdetails"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"
)

// ErrClosed is returned by calls on a closed Client, and by calls under way
// when it is closed.
var ErrClosed = errors.New("pushclient: client closed")

// InputError is input an edge refused as invalid (InvalidArgument), or that
// the client refused before sending it. It is never retried: the same input
// would be refused again. status.Code reports InvalidArgument for it.
type InputError struct {
	// Index is the position of the insight at fault in the slice given to
	// Push (for a Writer: among all the insights given to its Write calls,
	// the first being 0), or -1 when the problem is not with one insight
	// (or could not be told from the edge's answer).
	Index int
	// Field is the path of the field at fault, with Index as the insight's
	// index: "insights[2503].kind", "completion.scan_id". Empty when the
	// edge's answer did not name one.
	Field string
	// Reason says what is wrong, as the edge put it.
	Reason string
	// Edge is the address of the edge that refused it; empty when the
	// client refused it before sending.
	Edge string
	// Err is the edge's status error, with the edge's own message (whose
	// index is relative to the request, not to Push's slice).
	Err error
}

func (e *InputError) Error() string {
	who := "pushclient: edge " + e.Edge + " refused "
	if e.Edge == "" {
		who = "pushclient: refused "
	}
	if e.Field == "" {
		return who + "the request: " + e.Reason
	}
	return who + e.Field + ": " + e.Reason
}

func (e *InputError) Unwrap() error { return e.Err }

// GRPCStatus makes status.Code and status.FromError see InvalidArgument
// with this error's message (the index relative to Push's slice).
func (e *InputError) GRPCStatus() *status.Status {
	st, ok := status.FromError(e.Err)
	if !ok || st.Code() != codes.InvalidArgument {
		return status.New(codes.InvalidArgument, e.Error())
	}
	p := st.Proto()
	p.Message = e.Error()
	return status.FromProto(p)
}

// The edge's error details (edge.ErrorDomain and the rest of edge/errors.go;
// wire format, copied so that checkers do not link the edge, and held equal
// by TestWireFormat): at most one google.rpc.ErrorInfo per status, of
// domain errorDomain. A full WAL has reason reasonWALFull. A PushStream
// refused after some of its requests were accepted carries metaAccepted in
// its ErrorInfo's metadata: the insights before the failed request, which
// is also the index in the stream of that request's insights[0] (a
// BadRequest field path indexes the failed request).
const (
	errorDomain       = "longhaul.dev"
	reasonWALFull     = "WAL_FULL"
	reasonRateLimited = "RATE_LIMITED"
	metaAccepted      = "accepted"
	metaField         = "field"
)

// edgeInfo returns the edge's ErrorInfo of st, or nil.
func edgeInfo(st *status.Status) *errdetails.ErrorInfo {
	for _, d := range st.Details() {
		if ei, ok := d.(*errdetails.ErrorInfo); ok && ei.GetDomain() == errorDomain {
			return ei
		}
	}
	return nil
}

// insightPath is an edge's field path that names an insight, by its index
// in the request the edge refused.
var insightPath = regexp.MustCompile(`^insights\[(\d+)\](.*)$`)

// Edges from before the ErrorInfo dropped every detail of a stream refused
// after some of it was accepted, and said how much in the message (today's
// edges still append the note, for people). Such a message is read when
// the details are missing: the note, an InvalidArgument's
// "<field>: <reason>" (edge.FieldError), and a full WAL's first words.
var (
	acceptedNote = regexp.MustCompile(` \(the (\d+) insights before, seq \d+\.\.\d+, were accepted\)$`)
	fieldMessage = regexp.MustCompile(`^((?:insights|completion)(?:\[\d+\])?(?:\.[a-z_]+)*): (.*)$`)
)

// legacyWALFull starts the message of a full WAL.
const legacyWALFull = "edge: the write-ahead log is full"

// acceptedBefore returns how many insights of the stream an edge's error
// says it accepted before the request it refused (0 when it says none),
// and the error's message without the note that says it in words.
func acceptedBefore(st *status.Status) (n int, msg string) {
	msg = st.Message()
	m := acceptedNote.FindStringSubmatch(msg)
	if m != nil {
		msg = strings.TrimSuffix(msg, m[0])
	}
	if ei := edgeInfo(st); ei != nil {
		if v, ok := ei.GetMetadata()[metaAccepted]; ok {
			n, _ = strconv.Atoi(v)
			return n, msg
		}
	}
	if m != nil {
		n, _ = strconv.Atoi(m[1])
	}
	return n, msg
}

// inputError turns an InvalidArgument from edge into an InputError whose
// index is relative to the caller's slice: offset is the index of the
// stream's first insight (or 0 for a completion).
func inputError(edge string, err error, offset int) *InputError {
	st := status.Convert(err)
	before, msg := acceptedBefore(st)
	ie := &InputError{Index: -1, Reason: msg, Edge: edge, Err: err}
	for _, d := range st.Details() {
		if br, ok := d.(*errdetails.BadRequest); ok && len(br.GetFieldViolations()) > 0 {
			ie.Field, ie.Reason = br.GetFieldViolations()[0].GetField(), br.GetFieldViolations()[0].GetDescription()
		}
	}
	if ie.Field == "" {
		if m := fieldMessage.FindStringSubmatch(msg); m != nil {
			ie.Field, ie.Reason = m[1], m[2]
		}
	}
	if m := insightPath.FindStringSubmatch(ie.Field); m != nil {
		if i, err := strconv.Atoi(m[1]); err == nil {
			ie.Index = offset + before + i
			ie.Field = fmt.Sprintf("insights[%d]%s", ie.Index, m[2])
		}
	}
	return ie
}

// deniedField returns the field an edge's PERMISSION_DENIED names (its
// ErrorInfo's metaField), indexed from Push's slice as inputError does, and
// the reason.
func deniedField(err error, offset int) (field, reason string, ok bool) {
	st := status.Convert(err)
	ei := edgeInfo(st)
	if ei == nil || ei.GetMetadata()[metaField] == "" {
		return "", "", false
	}
	before, msg := acceptedBefore(st)
	field = ei.GetMetadata()[metaField]
	reason = strings.TrimPrefix(msg, field+": ")
	if m := insightPath.FindStringSubmatch(field); m != nil {
		if i, err := strconv.Atoi(m[1]); err == nil {
			field = fmt.Sprintf("insights[%d]%s", offset+before+i, m[2])
		}
	}
	return field, reason, true
}

// RetryDelay is the retry hint an edge sent with err: a google.rpc.RetryInfo
// detail of the status, or the grpc-retry-pushback-ms trailer. Hints are
// capped at a minute.
func RetryDelay(err error) (time.Duration, bool) {
	var h *hintError
	if errors.As(err, &h) {
		return h.after, true
	}
	for _, d := range status.Convert(err).Details() {
		if ri, ok := d.(*errdetails.RetryInfo); ok && ri.GetRetryDelay() != nil {
			if after := ri.GetRetryDelay().AsDuration(); after > 0 {
				return min(after, maxHint), true
			}
		}
	}
	return 0, false
}

// hintError carries the retry hint of a trailer with the error it came with.
type hintError struct {
	error
	after time.Duration
}

func (e *hintError) Unwrap() error { return e.error }

// GRPCStatus keeps status.Code and status.Convert working through the wrap.
func (e *hintError) GRPCStatus() *status.Status { return status.Convert(e.error) }

// withTrailerHint attaches the grpc-retry-pushback-ms hint of trailer to
// err, unless the status carries one already.
func withTrailerHint(err error, trailer metadata.MD) error {
	if err == nil {
		return nil
	}
	if _, ok := RetryDelay(err); ok {
		return err
	}
	for _, v := range trailer.Get("grpc-retry-pushback-ms") {
		if ms, perr := strconv.ParseInt(v, 10, 64); perr == nil && ms > 0 {
			return &hintError{error: err, after: min(time.Duration(ms)*time.Millisecond, maxHint)}
		}
	}
	return err
}

// retryable tells whether a failed attempt may succeed when sent again
// (elsewhere or later). Called only while the caller's context and the
// Client are alive, so Canceled here means the connection was closed under
// the attempt.
func retryable(err error) bool {
	st := status.Convert(err)
	switch st.Code() {
	case codes.Unavailable, codes.DeadlineExceeded, codes.Aborted, codes.Canceled:
		return true
	case codes.ResourceExhausted:
		return walFull(err)
	}
	return false
}

// rateLimited tells an edge's refusal of a client over its rate of
// insights (ResourceExhausted with reason RATE_LIMITED): the edge is well,
// the client waits for its hint.
func rateLimited(err error) bool {
	st := status.Convert(err)
	if st.Code() != codes.ResourceExhausted {
		return false
	}
	ei := edgeInfo(st)
	return ei != nil && ei.GetReason() == reasonRateLimited
}

// walFull tells a ResourceExhausted that passes (the edge's WAL is full)
// from one that does not (gRPC's limit on a message's size). The edge says
// so with its ErrorInfo; any exhaustion with a retry hint is taken at its
// word; an older edge's message is read for the rest.
func walFull(err error) bool {
	st := status.Convert(err)
	if ei := edgeInfo(st); ei != nil {
		return ei.GetReason() == reasonWALFull
	}
	if _, ok := RetryDelay(err); ok {
		return true
	}
	return strings.HasPrefix(st.Message(), legacyWALFull)
}
