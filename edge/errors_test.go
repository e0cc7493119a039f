package edge

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strconv"
	"strings"
	"testing"
	"time"

	"google.golang.org/genproto/googleapis/rpc/errdetails"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/structpb"

	longhaulv1 "github.com/longhaul/longhaul/api/longhaul/v1"
)

// errDetails is a status error taken apart: its code and message, and its
// details by type.
type errDetails struct {
	code  codes.Code
	msg   string
	infos []*errdetails.ErrorInfo
	retry []*errdetails.RetryInfo
	bad   []*errdetails.BadRequest
	other []any
}

func detailsOf(err error) errDetails {
	st := status.Convert(err)
	d := errDetails{code: st.Code(), msg: st.Message()}
	for _, x := range st.Details() {
		switch x := x.(type) {
		case *errdetails.ErrorInfo:
			d.infos = append(d.infos, x)
		case *errdetails.RetryInfo:
			d.retry = append(d.retry, x)
		case *errdetails.BadRequest:
			d.bad = append(d.bad, x)
		default:
			d.other = append(d.other, x)
		}
	}
	return d
}

// info returns the one ErrorInfo of d, failing t unless there is exactly
// one, of the edge's domain, with reason.
func (d errDetails) info(t *testing.T, reason string) *errdetails.ErrorInfo {
	t.Helper()
	if len(d.infos) != 1 || d.infos[0].GetDomain() != ErrorDomain || d.infos[0].GetReason() != reason {
		t.Fatalf("ErrorInfo details %v; want exactly one, reason %s, domain %s", d.infos, reason, ErrorDomain)
	}
	return d.infos[0]
}

// checkAccepted checks the partial-acceptance metadata of info: accepted
// insights, whose sequence numbers are the last ones of the edge's WAL.
func checkAccepted(t *testing.T, info *errdetails.ErrorInfo, accepted int, walLast uint64) (first, last uint64) {
	t.Helper()
	m := info.GetMetadata()
	n, err1 := strconv.Atoi(m[MetaAccepted])
	first, err2 := strconv.ParseUint(m[MetaFirstSeq], 10, 64)
	last, err3 := strconv.ParseUint(m[MetaLastSeq], 10, 64)
	if err := errors.Join(err1, err2, err3); err != nil || len(m) != 3 {
		t.Fatalf("metadata %v: %v; want exactly %s, %s and %s, decimal", m, err, MetaAccepted, MetaFirstSeq, MetaLastSeq)
	}
	if n != accepted || last != walLast || last-first+1 != uint64(accepted) {
		t.Fatalf("metadata %v; want %d accepted, ending at the WAL's last seq %d", m, accepted, walLast)
	}
	return first, last
}

// streamOf sends reqs as one PushStream, as far as the edge takes them, and
// returns the edge's answer.
func streamOf(t *testing.T, ingest longhaulv1.IngestClient, reqs ...*longhaulv1.PushRequest) (*longhaulv1.PushResponse, error) {
	t.Helper()
	stream, err := ingest.PushStream(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	for _, r := range reqs {
		if err := stream.Send(r); errors.Is(err, io.EOF) {
			break // the edge ended the stream; CloseAndRecv says why
		} else if err != nil {
			t.Fatal(err)
		}
	}
	return stream.CloseAndRecv()
}

func request(ins ...*longhaulv1.Insight) *longhaulv1.PushRequest {
	return &longhaulv1.PushRequest{Insights: ins}
}

// bigInsight is a valid insight of about n bytes of details.
func bigInsight(subject string, n int) *longhaulv1.Insight {
	in := insight("scan-big", "k", subject, time.Now())
	in.Details.Fields["pad"] = structpb.NewStringValue(strings.Repeat("x", n))
	return in
}

// TestStreamErrorDetails: a PushStream that fails after some of its
// requests were accepted keeps its error's code and details (a bad input's
// BadRequest, indexed from the failed request) and adds an ErrorInfo with
// the count and sequence range accepted; one that fails at once says
// nothing was. gRPC's own message size limit gives RESOURCE_EXHAUSTED
// without the WAL_FULL reason or a retry hint.
func TestStreamErrorDetails(t *testing.T) {
	t.Parallel()
	s := startSystem(t, Config{MaxRequestBytes: 64 << 10})
	now := time.Now()
	valid := func(n int, prefix string) []*longhaulv1.Insight {
		out := make([]*longhaulv1.Insight, n)
		for i := range out {
			out[i] = insight("scan-d", "k", fmt.Sprint(prefix, i), now)
		}
		return out
	}
	walLast := func() uint64 { return s.edge.WAL().Stats().LastSeq }

	t.Run("bad input mid-stream", func(t *testing.T) {
		bad := valid(3, "c")
		bad[1].Kind = ""
		_, err := streamOf(t, s.ingest, request(valid(3, "a")...), request(valid(2, "b")...), request(bad...), request(valid(1, "d")...))
		d := detailsOf(err)
		if d.code != codes.InvalidArgument {
			t.Fatalf("%v; want InvalidArgument", err)
		}
		if len(d.bad) != 1 || len(d.bad[0].FieldViolations) != 1 ||
			d.bad[0].FieldViolations[0].Field != "insights[1].kind" || d.bad[0].FieldViolations[0].Description != "is required" {
			t.Fatalf("BadRequest details %v; want one, insights[1].kind (of the failed request) is required", d.bad)
		}
		first, last := checkAccepted(t, d.info(t, ReasonPartiallyAccepted), 5, walLast())
		if want := fmt.Sprintf("insights[1].kind: is required (the 5 insights before, seq %d..%d, were accepted)", first, last); d.msg != want {
			t.Errorf("message %q, want %q", d.msg, want)
		}
		if len(d.retry) != 0 || len(d.other) != 0 {
			t.Errorf("other details: %v %v", d.retry, d.other)
		}
	})

	t.Run("bad input in the first request", func(t *testing.T) {
		bad := valid(2, "e")
		bad[0].Subject = ""
		before := walLast()
		_, err := streamOf(t, s.ingest, request(bad...), request(valid(1, "f")...))
		d := detailsOf(err)
		if d.code != codes.InvalidArgument || d.msg != "insights[0].subject: is required" || len(d.bad) != 1 || len(d.infos) != 0 {
			t.Fatalf("%v %v; want InvalidArgument with a BadRequest and no ErrorInfo (nothing accepted)", err, d.infos)
		}
		if walLast() != before {
			t.Errorf("WAL went from seq %d to %d", before, walLast())
		}
	})

	// gRPC answers a message over MaxRequestBytes itself, before the
	// edge's handler sees it: no details, even after some of the stream
	// was accepted; above all, no WAL_FULL reason and no retry hint.
	tooLarge := func(t *testing.T, err error) {
		t.Helper()
		d := detailsOf(err)
		if d.code != codes.ResourceExhausted || !strings.Contains(d.msg, "larger than max") ||
			len(d.infos)+len(d.retry)+len(d.bad)+len(d.other) != 0 {
			t.Fatalf("%v, details %v %v; want gRPC's RESOURCE_EXHAUSTED, no WAL_FULL reason, no retry hint", err, d.infos, d.retry)
		}
	}
	big := func(prefix string, n int) []*longhaulv1.Insight {
		out := make([]*longhaulv1.Insight, n)
		for i := range out {
			out[i] = bigInsight(fmt.Sprint(prefix, i), 10<<10)
		}
		return out
	}

	t.Run("message too large mid-stream", func(t *testing.T) {
		before := walLast()
		_, err := streamOf(t, s.ingest, request(valid(2, "g")...), request(big("h", 2)...), request(valid(4, "i")...), request(big("j", 7)...))
		tooLarge(t, err)
		// gRPC answers before the handler returns, so the requests read
		// before the one too large may still be on their way into the
		// WAL; they get there all the same.
		deadline := time.Now().Add(10 * time.Second)
		for walLast()-before < 8 && time.Now().Before(deadline) {
			time.Sleep(5 * time.Millisecond)
		}
		time.Sleep(50 * time.Millisecond) // and nothing after them
		if n := walLast() - before; n != 8 {
			t.Errorf("the WAL took %d insights, want the 8 before the message too large", n)
		}
	})

	t.Run("message too large, unary", func(t *testing.T) {
		_, err := s.ingest.Push(context.Background(), request(big("k", 8)...))
		tooLarge(t, err)
	})
}

// TestStreamWALFullDetails: a PushStream the WAL fills part way gets
// RESOURCE_EXHAUSTED with the retry hint and the WAL_FULL reason, whose
// metadata says what the stream had accepted; over HTTP a full WAL is 429
// with Retry-After and the same reason in the body.
func TestStreamWALFullDetails(t *testing.T) {
	t.Parallel()
	s := startSystem(t, Config{QuotaBytes: 64 << 10})
	ctx := context.Background()
	if err := s.primary.Stop(ctx); err != nil { // nothing ships: nothing frees room
		t.Fatal(err)
	}
	var reqs []*longhaulv1.PushRequest
	for c := range 1000 {
		var ins []*longhaulv1.Insight
		for i := range 10 {
			ins = append(ins, insight("scan-full", "k", fmt.Sprint(c, "/", i), time.Now()))
		}
		reqs = append(reqs, request(ins...))
	}
	resp, err := streamOf(t, s.ingest, reqs...)
	st := s.edge.WAL().Stats()
	if err == nil {
		t.Fatalf("a stream of 10000 insights into a WAL of 64 KiB was accepted: %v", resp)
	}
	d := detailsOf(err)
	if d.code != codes.ResourceExhausted {
		t.Fatalf("%v; want RESOURCE_EXHAUSTED", err)
	}
	if len(d.retry) != 1 || d.retry[0].GetRetryDelay().AsDuration() != RetryAfterFull {
		t.Errorf("RetryInfo details %v; want one of %s", d.retry, RetryAfterFull)
	}
	if st.AppendedRecords == 0 || st.AppendedRecords%10 != 0 {
		t.Fatalf("the WAL took %d records before it filled; want some, in whole requests", st.AppendedRecords)
	}
	checkAccepted(t, d.info(t, ReasonWALFull), int(st.AppendedRecords), st.LastSeq)
	if !strings.HasPrefix(d.msg, "edge: the write-ahead log is full") || !strings.HasSuffix(d.msg, "were accepted)") {
		t.Errorf("message %q", d.msg)
	}

	// A unary push (nothing accepted before): the reason, no metadata.
	for i := 0; ; i++ {
		_, err = s.ingest.Push(ctx, request(insight("scan-full", "k", fmt.Sprint("unary", i), time.Now())))
		if err != nil || i == 1000 {
			break
		}
	}
	d = detailsOf(err)
	if info := d.info(t, ReasonWALFull); len(info.GetMetadata()) != 0 || len(d.retry) != 1 {
		t.Errorf("unary push into a full WAL: %v, details %v %v; want WAL_FULL without metadata, and a retry hint", err, d.infos, d.retry)
	}

	// HTTP: fill what room is left, then 429.
	code, body, hdr := http.StatusOK, "", http.Header{}
	for i := 0; code == http.StatusOK && i < 1000; i++ {
		code, body, hdr = postJSON(t, s.http+"/v1/insights:push", fmt.Sprintf(`{"insights":[{"account_id":"acme","asset":"a",
			"kind":"k","subject":"h%d","severity":"HIGH","observed_at":%q,"scan_id":"x","checker":"c"}]}`, i, time.Now().Format(time.RFC3339Nano)))
	}
	if want := strconv.Itoa(int(RetryAfterFull / time.Second)); code != http.StatusTooManyRequests || hdr.Get("Retry-After") != want ||
		!strings.Contains(body, `"reason":"`+ReasonWALFull+`"`) {
		t.Errorf("HTTP push into a full WAL: %d, Retry-After %q, %s; want 429, Retry-After %s and the WAL_FULL reason", code, hdr.Get("Retry-After"), body, want)
	}
}

// TestPartiallyAccepted: the metadata joins the error's own ErrorInfo, or
// comes in one of its own; everything else of the error is kept.
func TestPartiallyAccepted(t *testing.T) {
	t.Parallel()
	acc := &longhaulv1.PushResponse{Accepted: 7, FirstSeq: 11, LastSeq: 17}
	want := map[string]string{MetaAccepted: "7", MetaFirstSeq: "11", MetaLastSeq: "17"}
	note := " (the 7 insights before, seq 11..17, were accepted)"

	d := detailsOf(partiallyAccepted(errWALFull(), acc))
	if info := d.info(t, ReasonWALFull); d.code != codes.ResourceExhausted || fmt.Sprint(info.Metadata) != fmt.Sprint(want) ||
		len(d.retry) != 1 || !strings.HasSuffix(d.msg, "another edge"+note) {
		t.Errorf("WAL full: %s %q %v %v", d.code, d.msg, d.infos, d.retry)
	}
	d = detailsOf(partiallyAccepted((&FieldError{Index: 2, Field: "insights[2].kind", Reason: "is required"}).GRPCStatus().Err(), acc))
	if info := d.info(t, ReasonPartiallyAccepted); d.code != codes.InvalidArgument || fmt.Sprint(info.Metadata) != fmt.Sprint(want) ||
		len(d.bad) != 1 || d.msg != "insights[2].kind: is required"+note {
		t.Errorf("bad input: %s %q %v %v", d.code, d.msg, d.infos, d.bad)
	}
	d = detailsOf(partiallyAccepted(errors.New("not a status"), acc))
	d.info(t, ReasonPartiallyAccepted)
	if d.code != codes.Unknown || d.msg != "not a status"+note {
		t.Errorf("plain error: %s %q", d.code, d.msg)
	}
	err := errWALFull()
	if got := partiallyAccepted(err, &longhaulv1.PushResponse{}); got != err {
		t.Errorf("nothing accepted: %v, want the error unchanged", got)
	}
}
