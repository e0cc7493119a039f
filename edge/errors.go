package edge

import (
	"fmt"
	"strconv"

	"google.golang.org/genproto/googleapis/rpc/errdetails"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/anypb"
	"google.golang.org/protobuf/types/known/durationpb"

	longhaulv1 "github.com/longhaul/longhaul/api/longhaul/v1"
)

// Wire format: the google.rpc.ErrorInfo of the edge's errors. A status
// carries at most one ErrorInfo (AIP-193: one detail of each type), so the
// acceptance of a stream that failed part way rides in the metadata of
// whatever ErrorInfo the error has. Clients (pushclient) keep copies of
// these values.
const (
	// ErrorDomain is the Domain of every ErrorInfo the edge sends.
	ErrorDomain = "longhaul.dev"

	// ReasonWALFull: RESOURCE_EXHAUSTED because the WAL reached its quota,
	// with a google.rpc.RetryInfo (RetryAfterFull). The same request may
	// succeed later or on another edge. A RESOURCE_EXHAUSTED without this
	// reason is gRPC's own (a message over MaxRequestBytes, with no
	// details at all) and would be refused again.
	ReasonWALFull = "WAL_FULL"

	// ReasonRateLimited: RESOURCE_EXHAUSTED because the client (its token
	// name, certificate subject, or address) pushed more insights than its
	// rate allows (Access.ClientRate), with a google.rpc.RetryInfo: when
	// its bucket holds enough again. The edge is healthy: the same client
	// should wait the hint and send again, to this edge or another.
	ReasonRateLimited = "RATE_LIMITED"

	// ReasonAccountNotPermitted: PERMISSION_DENIED because the client's
	// token is scoped to accounts (accounts= in the tokens file) and the
	// request writes another. The ErrorInfo's metadata names the field
	// (MetaField, "insights[3].account_id" or "completion.account_id", as a
	// BadRequest would) and the account (MetaAccountID). Nothing of the
	// request was written.
	ReasonAccountNotPermitted = "ACCOUNT_NOT_PERMITTED"

	// ReasonPartiallyAccepted is the reason of a PushStream error that has
	// no reason of its own (bad input, a WAL that cannot write) once some
	// of the stream was accepted. The code and the other details are the
	// error's own.
	ReasonPartiallyAccepted = "PARTIALLY_ACCEPTED"

	// MetaAccepted, MetaFirstSeq and MetaLastSeq are the metadata keys
	// (decimal values, named as in PushResponse) that a PushStream error
	// carries in its ErrorInfo once some of the stream was accepted: the
	// requests before the failed one were accepted whole, MetaAccepted
	// insights, durable under the sequence numbers MetaFirstSeq to
	// MetaLastSeq (inclusive). The failed request and those after it were
	// not accepted. Without these keys, nothing of the stream was; except
	// when gRPC refused a message itself (over MaxRequestBytes, or not
	// decodable): its status carries no details, whatever came before.
	//
	// Field paths of a BadRequest detail ("insights[3].kind") index the
	// failed request, not the stream: insights[i] of the failed request is
	// insight number MetaAccepted+i of the stream (counting from 0).
	MetaAccepted = "accepted"
	MetaFirstSeq = "first_seq"
	MetaLastSeq  = "last_seq"

	// MetaField and MetaAccountID are the metadata keys of an
	// ACCOUNT_NOT_PERMITTED ErrorInfo.
	MetaField     = "field"
	MetaAccountID = "account_id"
)

// errWALFull is the answer to a push the WAL has no room for.
func errWALFull() error {
	st, err := status.New(codes.ResourceExhausted, "edge: the write-ahead log is full; retry later or push to another edge").WithDetails(
		&errdetails.ErrorInfo{Reason: ReasonWALFull, Domain: ErrorDomain},
		&errdetails.RetryInfo{RetryDelay: durationpb.New(RetryAfterFull)})
	if err != nil {
		panic(err) // cannot happen: both details marshal
	}
	return st.Err()
}

// partiallyAccepted adds to err, which refused a request of a stream, what
// the stream had accepted before (acc): metadata of its ErrorInfo (one with
// ReasonPartiallyAccepted when err has none of the edge's), and a note in
// the message. The code, the other details and the message before the note
// are err's. err is returned as it is when nothing was accepted.
//
// The note's words are those edges wrote before the ErrorInfo existed, and
// clients of that time read the count from them: keep them.
func partiallyAccepted(err error, acc *longhaulv1.PushResponse) error {
	if acc.GetAccepted() == 0 {
		return err
	}
	p := status.Convert(err).Proto()
	meta := map[string]string{
		MetaAccepted: strconv.FormatInt(acc.GetAccepted(), 10),
		MetaFirstSeq: strconv.FormatUint(acc.GetFirstSeq(), 10),
		MetaLastSeq:  strconv.FormatUint(acc.GetLastSeq(), 10),
	}
	info, at := &errdetails.ErrorInfo{Reason: ReasonPartiallyAccepted, Domain: ErrorDomain}, len(p.Details)
	for i, d := range p.Details {
		var own errdetails.ErrorInfo
		if d.MessageIs(&own) && d.UnmarshalTo(&own) == nil && own.GetDomain() == ErrorDomain {
			info, at = &own, i
			break
		}
	}
	if info.Metadata == nil {
		info.Metadata = make(map[string]string, len(meta))
	}
	for k, v := range meta {
		info.Metadata[k] = v
	}
	a, aerr := anypb.New(info)
	if aerr != nil {
		return err // cannot happen: an ErrorInfo marshals
	}
	if at == len(p.Details) {
		p.Details = append(p.Details, a)
	} else {
		p.Details[at] = a
	}
	p.Message = fmt.Sprintf("%s (the %d insights before, seq %d..%d, were accepted)", p.Message, acc.GetAccepted(), acc.GetFirstSeq(), acc.GetLastSeq())
	return status.FromProto(p).Err()
}
