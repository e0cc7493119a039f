package pushclient

import (
	"errors"
	"testing"
	"time"

	"google.golang.org/genproto/googleapis/rpc/errdetails"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/protoadapt"
	"google.golang.org/protobuf/types/known/durationpb"

	"github.com/longhaul/longhaul/edge"
)

func TestOrderedPicker(t *testing.T) {
	t.Parallel()
	clk := newClock()
	p := NewOrderedPicker([]string{"a", "b", "c"}, 10*time.Second)
	p.now = clk.Now
	pick := func(want string, exclude ...string) {
		t.Helper()
		ex := map[string]bool{}
		for _, e := range exclude {
			ex[e] = true
		}
		got, ok := p.Pick(ex)
		if want == "" && ok || want != "" && got != want {
			t.Errorf("Pick(exclude %v) = %q, %v; want %q", exclude, got, ok, want)
		}
	}
	unavailable := status.Error(codes.Unavailable, "down")

	pick("a")
	pick("b", "a")
	pick("", "a", "b", "c")

	p.Failed("a", unavailable)
	pick("b") // a cools down
	clk.Advance(5 * time.Second)
	p.Failed("b", unavailable)
	pick("c")
	pick("a", "c") // all cooling: the one whose cooldown ends first
	clk.Advance(5 * time.Second)
	pick("a") // a's cooldown is over: preferred again
	p.Failed("a", unavailable)
	p.Succeeded("b") // b answered (while cooling): no longer avoided
	pick("b")

	// A retry hint longer than the cooldown wins.
	hinted, _ := status.New(codes.ResourceExhausted, "full").WithDetails(&errdetails.RetryInfo{RetryDelay: durationpb.New(time.Minute)})
	p.Failed("b", hinted.Err())
	p.Failed("c", unavailable)
	clk.Advance(30 * time.Second)
	pick("a")
	pick("c", "a")
	clk.Advance(30 * time.Second)
	pick("b", "a")
}

func TestRetryDelay(t *testing.T) {
	t.Parallel()
	hinted := func(d time.Duration) error {
		st, _ := status.New(codes.ResourceExhausted, "full").WithDetails(&errdetails.RetryInfo{RetryDelay: durationpb.New(d)})
		return st.Err()
	}
	for name, c := range map[string]struct {
		err  error
		want time.Duration
		ok   bool
	}{
		"none":                {status.Error(codes.ResourceExhausted, "full"), 0, false},
		"not a status":        {errors.New("x"), 0, false},
		"RetryInfo":           {hinted(5 * time.Second), 5 * time.Second, true},
		"RetryInfo capped":    {hinted(time.Hour), maxHint, true},
		"RetryInfo zero":      {hinted(0), 0, false},
		"trailer":             {withTrailerHint(status.Error(codes.Unavailable, "x"), map[string][]string{"grpc-retry-pushback-ms": {"1500"}}), 1500 * time.Millisecond, true},
		"trailer negative":    {withTrailerHint(status.Error(codes.Unavailable, "x"), map[string][]string{"grpc-retry-pushback-ms": {"-1"}}), 0, false},
		"detail over trailer": {withTrailerHint(hinted(time.Second), map[string][]string{"grpc-retry-pushback-ms": {"9000"}}), time.Second, true},
	} {
		got, ok := RetryDelay(c.err)
		if got != c.want || ok != c.ok {
			t.Errorf("%s: RetryDelay = %s, %v; want %s, %v", name, got, ok, c.want, c.ok)
		}
	}
	// The trailer's hint keeps the status visible.
	err := withTrailerHint(status.Error(codes.Unavailable, "x"), map[string][]string{"grpc-retry-pushback-ms": {"10"}})
	if status.Code(err) != codes.Unavailable {
		t.Errorf("code through the hint: %s", status.Code(err))
	}
}

func TestRetryable(t *testing.T) {
	t.Parallel()
	// ResourceExhausted without a word of a full WAL: see below.
	for code, want := range map[codes.Code]bool{
		codes.Unavailable: true, codes.DeadlineExceeded: true, codes.Aborted: true, codes.Canceled: true,
		codes.InvalidArgument: false, codes.Internal: false, codes.Unknown: false, codes.Unimplemented: false,
		codes.PermissionDenied: false, codes.Unauthenticated: false, codes.FailedPrecondition: false, codes.ResourceExhausted: false,
	} {
		if got := retryable(status.Error(code, "x")); got != want {
			t.Errorf("retryable(%s) = %v, want %v", code, got, want)
		}
	}
	// ResourceExhausted passes when the WAL is full, as the edge's
	// ErrorInfo says (whatever the message), or a retry hint, or an older
	// edge's message; not otherwise, gRPC's size limit above all.
	exhausted := func(msg string, details ...protoadapt.MessageV1) error {
		st, err := status.New(codes.ResourceExhausted, msg).WithDetails(details...)
		if err != nil {
			t.Fatal(err)
		}
		return st.Err()
	}
	walFull := &errdetails.ErrorInfo{Reason: edge.ReasonWALFull, Domain: edge.ErrorDomain}
	hint := &errdetails.RetryInfo{RetryDelay: durationpb.New(5 * time.Second)}
	for name, c := range map[string]struct {
		err  error
		want bool
	}{
		"WAL_FULL with a hint":  {exhausted("x", walFull, hint), true},
		"WAL_FULL, no hint":     {exhausted("x", walFull), true},
		"WAL_FULL, part way":    {exhausted("x", &errdetails.ErrorInfo{Reason: edge.ReasonWALFull, Domain: edge.ErrorDomain, Metadata: map[string]string{"accepted": "5"}}), true},
		"a hint only":           {exhausted("x", hint), true},
		"a trailer hint":        {withTrailerHint(status.Error(codes.ResourceExhausted, "x"), map[string][]string{"grpc-retry-pushback-ms": {"100"}}), true},
		"an older edge's words": {status.Error(codes.ResourceExhausted, "edge: the write-ahead log is full; retry later or push to another edge (the 5 insights before, seq 1..5, were accepted)"), true},
		"another reason":        {exhausted("edge: the write-ahead log is full", &errdetails.ErrorInfo{Reason: edge.ReasonPartiallyAccepted, Domain: edge.ErrorDomain}, hint), false},
		"another domain":        {exhausted("x", &errdetails.ErrorInfo{Reason: edge.ReasonWALFull, Domain: "example.com"}), false},
		"gRPC's size limit":     {status.Error(codes.ResourceExhausted, "grpc: received message larger than max (70000000 vs. 67108864)"), false},
		"the client's limit":    {status.Error(codes.ResourceExhausted, "trying to send message larger than max (70000000 vs. 67108864)"), false},
	} {
		if got := retryable(c.err); got != c.want {
			t.Errorf("%s: retryable = %v, want %v", name, got, c.want)
		}
	}
}
