package pushclient

import (
	"errors"
	"strings"
	"testing"
	"time"

	"google.golang.org/genproto/googleapis/rpc/errdetails"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/longhaul/longhaul/edge"
)

// TestInputError: the edge's InvalidArgument answers (as edge.FieldError
// makes them) become InputErrors indexed from Push's slice.
func TestInputError(t *testing.T) {
	t.Parallel()
	fieldErr := func(index int, field, reason string) error {
		return (&edge.FieldError{Index: index, Field: field, Reason: reason}).GRPCStatus().Err()
	}
	// What an edge answers when a stream fails after some of it was
	// accepted: today, the details kept and the count in the ErrorInfo;
	// before the ErrorInfo, the message only.
	partial := func(msg string, accepted string) error {
		st, err := status.New(codes.InvalidArgument, msg).WithDetails(
			&errdetails.BadRequest{FieldViolations: []*errdetails.BadRequest_FieldViolation{{Field: "insights[3].kind", Description: "is required"}}},
			&errdetails.ErrorInfo{Reason: edge.ReasonPartiallyAccepted, Domain: edge.ErrorDomain, Metadata: map[string]string{
				edge.MetaAccepted: accepted, edge.MetaFirstSeq: "7", edge.MetaLastSeq: "506"}})
		if err != nil {
			t.Fatal(err)
		}
		return st.Err()
	}
	midStream := status.Error(codes.InvalidArgument, "insights[3].kind: is required (the 500 insights before, seq 7..506, were accepted)")
	for name, c := range map[string]struct {
		err                  error
		offset               int
		index                int
		field, reason, error string
	}{
		"first chunk": {fieldErr(3, "insights[3].kind", "is required"), 2000, 2003, "insights[2003].kind", "is required",
			"pushclient: edge e1 refused insights[2003].kind: is required"},
		"later chunk": {partial("insights[3].kind: is required (the 500 insights before, seq 7..506, were accepted)", "500"), 2000, 2503,
			"insights[2503].kind", "is required", "pushclient: edge e1 refused insights[2503].kind: is required"},
		"later chunk, the details only": {partial("kind is missing", "500"), 2000, 2503, "insights[2503].kind", "is required", ""},
		"later chunk, the details first": {partial("insights[3].kind: is required (the 1 insights before, seq 7..7, were accepted)", "500"), 2000, 2503,
			"insights[2503].kind", "is required", ""},
		"later chunk, an older edge": {midStream, 2000, 2503, "insights[2503].kind", "is required",
			"pushclient: edge e1 refused insights[2503].kind: is required"},
		"the insight itself": {fieldErr(0, "insights[0]", "must not be null"), 10, 10, "insights[10]", "must not be null", ""},
		"the request": {fieldErr(-1, "insights", "at most 10000 insights per request, got 20000"), 0, -1, "insights",
			"at most 10000 insights per request, got 20000", ""},
		"completion": {fieldErr(-1, "completion.finished_at", "must not be before started_at"), 0, -1, "completion.finished_at",
			"must not be before started_at", "pushclient: edge e1 refused completion.finished_at: must not be before started_at"},
		"unknown form": {status.Error(codes.InvalidArgument, "something else"), 0, -1, "", "something else",
			"pushclient: edge e1 refused the request: something else"},
		"unknown form, part way": {status.Error(codes.InvalidArgument, "something else (the 5 insights before, seq 1..5, were accepted)"), 0, -1, "",
			"something else", "pushclient: edge e1 refused the request: something else"},
	} {
		ie := inputError("e1", c.err, c.offset)
		if ie.Index != c.index || ie.Field != c.field || ie.Reason != c.reason {
			t.Errorf("%s: index %d field %q reason %q; want %d %q %q", name, ie.Index, ie.Field, ie.Reason, c.index, c.field, c.reason)
		}
		if c.error != "" && ie.Error() != c.error {
			t.Errorf("%s: %q, want %q", name, ie.Error(), c.error)
		}
		if !errors.Is(ie, c.err) {
			t.Errorf("%s: does not wrap the edge's error", name)
		}
		st := status.Convert(ie)
		if st.Code() != codes.InvalidArgument || st.Message() != ie.Error() {
			t.Errorf("%s: status %s %q", name, st.Code(), st.Message())
		}
	}
}

// TestWireFormat: the client's copies of the edge's error details are the
// edge's.
func TestWireFormat(t *testing.T) {
	t.Parallel()
	for _, c := range [][2]string{
		{errorDomain, edge.ErrorDomain},
		{reasonWALFull, edge.ReasonWALFull},
		{reasonRateLimited, edge.ReasonRateLimited},
		{metaAccepted, edge.MetaAccepted},
		{metaField, edge.MetaField},
	} {
		if c[0] != c[1] {
			t.Errorf("pushclient has %q, the edge %q", c[0], c[1])
		}
	}
}

func TestConfig(t *testing.T) {
	t.Parallel()
	for name, c := range map[string]struct {
		cfg  Config
		want string // in the error; "" for none
	}{
		"defaults":          {Config{Edges: []string{"a"}}, ""},
		"picker only":       {Config{Picker: NewOrderedPicker([]string{"a"}, time.Second)}, ""},
		"no edges":          {Config{}, "Edges (or a Picker) is required"},
		"empty edge":        {Config{Edges: []string{"a", ""}}, "Edges[1] is empty"},
		"duplicate edge":    {Config{Edges: []string{"a", "a"}}, "listed twice"},
		"chunk > stream":    {Config{Edges: []string{"a"}, ChunkInsights: 10, StreamInsights: 5}, "StreamInsights (5) must be at least ChunkInsights (10)"},
		"negative chunk":    {Config{Edges: []string{"a"}, ChunkInsights: -1}, "ChunkInsights must be at least 1"},
		"backoff order":     {Config{Edges: []string{"a"}, MinBackoff: time.Second, MaxBackoff: time.Millisecond}, "MinBackoff <= MaxBackoff"},
		"ping too often":    {Config{Edges: []string{"a"}, KeepaliveTime: 5 * time.Second}, "KeepaliveTime must be at least 10s"},
		"negative cooldown": {Config{Edges: []string{"a"}, EdgeCooldown: -time.Second}, "EdgeCooldown must not be negative"},
	} {
		c.cfg.setDefaults()
		err := c.cfg.validate()
		if c.want == "" && err != nil || c.want != "" && (err == nil || !strings.Contains(err.Error(), c.want)) {
			t.Errorf("%s: %v, want %q", name, err, c.want)
		}
	}
	cfg := Config{Edges: []string{"a"}, ChunkInsights: 80_000}
	cfg.setDefaults()
	if cfg.StreamInsights != 80_000 || cfg.MaxBackoff != DefaultMaxBackoff {
		t.Errorf("defaults: stream %d, max backoff %s", cfg.StreamInsights, cfg.MaxBackoff)
	}
}

func TestBackoff(t *testing.T) {
	t.Parallel()
	c := &Client{cfg: Config{MinBackoff: 50 * time.Millisecond, MaxBackoff: 5 * time.Second}}
	for rounds := range 100 {
		want := min(5*time.Second, 50*time.Millisecond<<min(rounds, 20))
		for range 20 {
			if d := c.backoff(rounds); d < want/2 || d > want {
				t.Fatalf("backoff(%d) = %s, want within [%s, %s]", rounds, d, want/2, want)
			}
		}
	}
}
