package edge

import (
	"fmt"
	"math"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"
	"unicode/utf8"

	"google.golang.org/genproto/googleapis/rpc/errdetails"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/structpb"
	"google.golang.org/protobuf/types/known/timestamppb"

	longhaulv1 "github.com/longhaul/longhaul/api/longhaul/v1"
)

// Validation runs before anything is appended to the WAL, so the WAL never
// holds what the primary will refuse. PostgreSQL refuses NUL bytes in text,
// invalid UTF-8, \u0000 inside jsonb strings, btree index rows over about
// 2700 bytes and severities the schema does not know; each rule below keeps
// one of those out.

// Byte limits of the string fields. All of them are required. The key
// (account_id, asset, kind, subject) is at most 1792 bytes, which keeps a
// primary-key index row under PostgreSQL's btree limit (about 2700 bytes)
// even when nothing compresses.
const (
	MaxAccountIDBytes = 128
	MaxAssetBytes     = 512
	MaxKindBytes      = 128
	MaxSubjectBytes   = 1024
	MaxScanIDBytes    = 128
	MaxCheckerBytes   = 64
)

// MaxDetailsDepth is how deeply details may nest: the details object itself
// is level 1, an object or list inside it level 2, and so on.
const MaxDetailsDepth = 32

// MaxScanInsightCount is the largest insight_count a scan completion may
// carry.
const MaxScanInsightCount = 10_000_000

// Defaults of Limits.
const (
	DefaultMaxInsightsPerRequest = 10_000
	DefaultMaxDetailsBytes       = 16 << 10
	DefaultMaxClockSkew          = 15 * time.Minute
	DefaultMaxAge                = 365 * 24 * time.Hour
)

// Limits bounds what the edge accepts. A zero (or negative) field means its
// default.
type Limits struct {
	// MaxInsightsPerRequest is the most insights one Push request (or one
	// message of a PushStream) may carry. Default 10000.
	MaxInsightsPerRequest int
	// MaxDetailsBytes is the most bytes an insight's details may take,
	// measured as the compact JSON the edge stores. Default 16384.
	MaxDetailsBytes int
	// MaxClockSkew is how far in the future, by the edge's clock, a
	// timestamp may lie: checkers' clocks run a little ahead. Default 15m.
	MaxClockSkew time.Duration
	// MaxAge is how far in the past a timestamp may lie. Default 365 days.
	MaxAge time.Duration
}

func (l Limits) withDefaults() Limits {
	if l.MaxInsightsPerRequest <= 0 {
		l.MaxInsightsPerRequest = DefaultMaxInsightsPerRequest
	}
	if l.MaxDetailsBytes <= 0 {
		l.MaxDetailsBytes = DefaultMaxDetailsBytes
	}
	if l.MaxClockSkew <= 0 {
		l.MaxClockSkew = DefaultMaxClockSkew
	}
	if l.MaxAge <= 0 {
		l.MaxAge = DefaultMaxAge
	}
	return l
}

// FieldError is bad input, named by the path of the field in the request
// (PushRequest or CompleteScanRequest). It converts to InvalidArgument (HTTP
// 400) with a google.rpc.BadRequest detail. Field never holds bytes of the
// input; Reason holds them only where it names a place in details (a JSON
// pointer, a key), cut to about 120 bytes and quoted as strconv.Quote does,
// so both are printable, valid UTF-8. In a
// PushStream the request is the message that failed, not the stream: see
// MetaAccepted for where its insights[0] is in the stream.
type FieldError struct {
	// Index is the position of the insight in the request, or -1 when the
	// problem is not with one insight.
	Index int
	// Field is the full path, e.g. "insights[3].subject".
	Field string
	// Reason says what is wrong, e.g. "must not contain NUL bytes".
	Reason string
}

func (e *FieldError) Error() string { return e.Field + ": " + e.Reason }

// GRPCStatus lets gRPC and grpc-gateway answer InvalidArgument / 400.
func (e *FieldError) GRPCStatus() *status.Status {
	st := status.New(codes.InvalidArgument, e.Error())
	br := &errdetails.BadRequest{FieldViolations: []*errdetails.BadRequest_FieldViolation{
		{Field: e.Field, Description: e.Reason},
	}}
	if withDetails, err := st.WithDetails(br); err == nil {
		return withDetails
	}
	return st
}

// ValidateInsights checks a request's insights and converts them to the form
// the edge stores and ships. It accepts all or nothing: on any problem it
// returns a *FieldError for the first one found and no insights. now is the
// edge's clock.
//
// Details are stored as compact JSON: details with sorted keys (encoding/json
// of Struct.AsMap), so the same Struct always gives the same bytes;
// details_json as given with the whitespace between tokens removed, so the
// same text always gives the same bytes; no details at all become {}.
// observed_at is truncated to microseconds, the database's precision.
func ValidateInsights(now time.Time, lim Limits, ins []*longhaulv1.Insight) ([]*longhaulv1.BatchInsight, error) {
	lim = lim.withDefaults()
	switch {
	case len(ins) == 0:
		return nil, &FieldError{Index: -1, Field: "insights", Reason: "at least one insight is required"}
	case len(ins) > lim.MaxInsightsPerRequest:
		return nil, &FieldError{Index: -1, Field: "insights", Reason: fmt.Sprintf(
			"at most %d insights per request, got %d", lim.MaxInsightsPerRequest, len(ins))}
	}
	out := make([]*longhaulv1.BatchInsight, len(ins))
	for i, in := range ins {
		b, field, reason := validateInsight(now, lim, in)
		if reason != "" {
			path := fmt.Sprintf("insights[%d]", i)
			if field != "" {
				path += "." + field
			}
			return nil, &FieldError{Index: i, Field: path, Reason: reason}
		}
		out[i] = b
	}
	return out, nil
}

// validateInsight returns the stored form of in, or the field at fault
// (relative to the insight, "" for the insight itself) and why.
func validateInsight(now time.Time, lim Limits, in *longhaulv1.Insight) (_ *longhaulv1.BatchInsight, field, reason string) {
	if in == nil {
		return nil, "", "must not be null"
	}
	for _, f := range [...]struct {
		name string
		val  string
		max  int
	}{
		{"account_id", in.GetAccountId(), MaxAccountIDBytes},
		{"asset", in.GetAsset(), MaxAssetBytes},
		{"kind", in.GetKind(), MaxKindBytes},
		{"subject", in.GetSubject(), MaxSubjectBytes},
		{"scan_id", in.GetScanId(), MaxScanIDBytes},
		{"checker", in.GetChecker(), MaxCheckerBytes},
	} {
		if r := checkString(f.val, f.max); r != "" {
			return nil, f.name, r
		}
	}
	if r := checkSeverity(in.GetSeverity()); r != "" {
		return nil, "severity", r
	}
	if in.GetObservedAt() == nil {
		return nil, "observed_at", "is required"
	}
	observed, r := checkTime(now, lim, in.GetObservedAt())
	if r != "" {
		return nil, "observed_at", r
	}
	// Last: the dearest check.
	var details []byte
	if text := in.GetDetailsJson(); text != "" {
		if in.GetDetails() != nil {
			return nil, "details_json", "must not be set together with details (set one or the other)"
		}
		if details, r = compactDetailsJSON(text, lim.MaxDetailsBytes); r != "" {
			return nil, "details_json", r
		}
	} else if details, r = encodeDetails(in.GetDetails(), lim.MaxDetailsBytes); r != "" {
		return nil, "details", r
	}
	return &longhaulv1.BatchInsight{
		AccountId:            in.GetAccountId(),
		Asset:                in.GetAsset(),
		Kind:                 in.GetKind(),
		Subject:              in.GetSubject(),
		Severity:             in.GetSeverity(),
		Details:              details,
		ObservedAtUnixMicros: observed.UnixMicro(),
		ScanId:               in.GetScanId(),
		Checker:              in.GetChecker(),
	}, "", ""
}

// ValidateCompletion checks a scan completion and returns the clone the edge
// stores: started_at and finished_at truncated to microseconds, and
// finished_at set to now (or to started_at, if that is later) when absent.
// On a problem it returns a *FieldError whose Field starts with
// "completion", as in CompleteScanRequest.
func ValidateCompletion(now time.Time, lim Limits, c *longhaulv1.ScanCompletion) (*longhaulv1.ScanCompletion, error) {
	lim = lim.withDefaults()
	fail := func(field, reason string) error {
		return &FieldError{Index: -1, Field: "completion." + field, Reason: reason}
	}
	if c == nil {
		return nil, &FieldError{Index: -1, Field: "completion", Reason: "is required"}
	}
	for _, f := range [...]struct {
		name string
		val  string
		max  int
	}{
		{"scan_id", c.GetScanId(), MaxScanIDBytes},
		{"account_id", c.GetAccountId(), MaxAccountIDBytes},
		{"asset", c.GetAsset(), MaxAssetBytes},
		{"checker", c.GetChecker(), MaxCheckerBytes},
	} {
		if r := checkString(f.val, f.max); r != "" {
			return nil, fail(f.name, r)
		}
	}
	if n := c.GetInsightCount(); n < 0 || n > MaxScanInsightCount {
		return nil, fail("insight_count", fmt.Sprintf("must be between 0 and %d, got %d", MaxScanInsightCount, n))
	}
	out := proto.CloneOf(c)
	var started time.Time
	if c.GetStartedAt() != nil {
		t, r := checkTime(now, lim, c.GetStartedAt())
		if r != "" {
			return nil, fail("started_at", r)
		}
		started = t
		out.StartedAt = timestamppb.New(t)
	}
	if c.GetFinishedAt() != nil {
		t, r := checkTime(now, lim, c.GetFinishedAt())
		if r != "" {
			return nil, fail("finished_at", r)
		}
		if t.Before(started) {
			return nil, fail("finished_at", "must not be before started_at")
		}
		out.FinishedAt = timestamppb.New(t)
	} else {
		// A checker whose clock runs ahead may start "after" the edge's now.
		finished := truncMicros(now)
		if finished.Before(started) {
			finished = started
		}
		out.FinishedAt = timestamppb.New(finished)
	}
	return out, nil
}

// checkString returns why s is not acceptable as a required text field of
// at most max bytes, or "".
func checkString(s string, max int) string {
	switch {
	case s == "":
		return "is required"
	case len(s) > max:
		return fmt.Sprintf("must be at most %d bytes, got %d", max, len(s))
	case strings.IndexByte(s, 0) >= 0:
		return "must not contain NUL bytes"
	case !utf8.ValidString(s):
		return "must be valid UTF-8"
	}
	// Bytes below 0x80 never occur inside a multi-byte UTF-8 sequence, so a
	// byte scan finds exactly the ASCII control characters.
	for i := 0; i < len(s); i++ {
		if b := s[i]; b < 0x20 || b == 0x7f {
			return fmt.Sprintf("must not contain control characters (found %U at byte %d)", rune(b), i)
		}
	}
	return ""
}

func checkSeverity(s longhaulv1.Severity) string {
	if s >= longhaulv1.Severity_LOW && s <= longhaulv1.Severity_CRITICAL {
		return ""
	}
	got := strconv.Itoa(int(s))
	if s == longhaulv1.Severity_SEVERITY_UNSPECIFIED {
		got = "SEVERITY_UNSPECIFIED"
	}
	return "must be LOW, MODERATE, HIGH or CRITICAL, got " + got
}

// checkTime returns ts truncated to microseconds, or why it is not a sane
// time for the edge whose clock reads now.
func checkTime(now time.Time, lim Limits, ts *timestamppb.Timestamp) (time.Time, string) {
	if !ts.IsValid() {
		return time.Time{}, "is not a valid timestamp (seconds must fall in years 0001 to 9999, nanos in 0 to 999999999)"
	}
	if ts.GetSeconds() == 0 && ts.GetNanos() == 0 {
		return time.Time{}, "is required (got the zero timestamp, 1970-01-01T00:00:00Z)"
	}
	t := ts.AsTime()
	if limit := now.Add(lim.MaxClockSkew); t.After(limit) {
		return time.Time{}, fmt.Sprintf("must not be more than %v ahead of the edge's clock (got %s, edge clock %s)",
			lim.MaxClockSkew, t.Format(time.RFC3339Nano), now.UTC().Format(time.RFC3339Nano))
	}
	if limit := now.Add(-lim.MaxAge); t.Before(limit) {
		return time.Time{}, fmt.Sprintf("must not be older than %v (got %s, edge clock %s)",
			lim.MaxAge, t.Format(time.RFC3339Nano), now.UTC().Format(time.RFC3339Nano))
	}
	return truncMicros(t), ""
}

// truncMicros rounds t down to the microsecond, as UnixMicro does.
func truncMicros(t time.Time) time.Time { return time.UnixMicro(t.UnixMicro()).UTC() }

// encodeDetails returns details as compact JSON, or why they cannot be
// stored. The bytes are exactly those of json.Marshal(details.AsMap()):
// sorted keys, HTML-safe string escapes, encoding/json's float format. They
// are hashed, so they must never change for a given Struct.
//
// One walk both checks and encodes. It keeps a lower bound of the encoded
// length and stops as soon as that passes maxBytes, so a huge tree costs a
// bounded walk, and what it encodes is at most a small multiple of maxBytes.
func encodeDetails(details *structpb.Struct, maxBytes int) ([]byte, string) {
	if details == nil {
		return []byte("{}"), ""
	}
	w := detailsWalkers.Get().(*detailsWalker)
	w.maxBytes, w.size = maxBytes, 0
	var out []byte
	r := w.object(details, 1)
	if r == "" {
		if len(w.buf) > maxBytes {
			r = w.tooBig(len(w.buf))
		} else {
			out = slices.Clone(w.buf)
		}
	}
	w.release()
	return out, r
}

// detailsWalkers holds walkers between calls, so their scratch space is
// allocated once rather than per insight.
var detailsWalkers = sync.Pool{New: func() any { return new(detailsWalker) }}

// detailsWalker checks a details tree for what JSON or jsonb refuses while
// appending its JSON to buf. size is a lower bound of the encoded length of
// what it has seen, so a tree it finds too big is certainly too big.
type detailsWalker struct {
	maxBytes int
	size     int
	buf      []byte
	// fields is a stack of the fields of the objects being walked, each
	// object's sorted in place; fieldsUsed is the most it has held.
	fields     []detailsField
	fieldsUsed int
	path       []detailsStep
}

type detailsField struct {
	key string
	val *structpb.Value
}

// detailsStep is one step of the path to the place being walked: an object
// key, or when index >= 0 a list index.
type detailsStep struct {
	key   string
	index int
}

// Scratch a pooled walker keeps; larger is dropped, so one odd request does
// not pin memory.
const (
	maxPooledDetailsBuf    = 64 << 10
	maxPooledDetailsFields = 1024
)

func (w *detailsWalker) release() {
	w.buf = w.buf[:0]
	if cap(w.buf) > maxPooledDetailsBuf {
		w.buf = nil
	}
	// Drop references into the caller's tree.
	// (After a refusal, fields still holds the objects being walked.)
	clear(w.fields[:max(w.fieldsUsed, len(w.fields))])
	w.fields, w.fieldsUsed = w.fields[:0], 0
	if cap(w.fields) > maxPooledDetailsFields {
		w.fields = nil
	}
	clear(w.path[:cap(w.path)])
	w.path = w.path[:0]
	detailsWalkers.Put(w)
}

func (w *detailsWalker) tooBig(n int) string {
	if n == 0 {
		return fmt.Sprintf("must take at most %d bytes as JSON", w.maxBytes)
	}
	return fmt.Sprintf("must take at most %d bytes as JSON, got %d", w.maxBytes, n)
}

func (w *detailsWalker) grow(n int) string {
	w.size += n
	if w.size > w.maxBytes {
		return w.tooBig(0)
	}
	return ""
}

var pointerEscaper = strings.NewReplacer("~", "~0", "/", "~1")

// at names the place being checked as a quoted JSON pointer (RFC 6901),
// cut to a readable length.
func (w *detailsWalker) at() string { return jsonPointer(w.path) }

// jsonPointer names the place path leads to as a quoted JSON pointer (RFC
// 6901), cut to a readable length. strconv.Quote makes it printable, valid
// UTF-8 whatever the keys hold.
func jsonPointer(path []detailsStep) string {
	var b strings.Builder
	for _, p := range path {
		b.WriteByte('/')
		if p.index >= 0 {
			b.WriteString(strconv.Itoa(p.index))
		} else {
			b.WriteString(pointerEscaper.Replace(p.key))
		}
		if b.Len() > 120 {
			break
		}
	}
	s := b.String()
	if len(s) > 120 {
		s = s[:120] + "..."
	}
	if s == "" {
		s = "/"
	}
	return strconv.Quote(s)
}

// text returns why s cannot be stored, or "". what names s in the message.
func (w *detailsWalker) text(what, s string) string {
	if strings.IndexByte(s, 0) >= 0 {
		return what + " at " + w.at() + ` must not contain NUL bytes (PostgreSQL jsonb refuses \u0000)`
	}
	if !utf8.ValidString(s) {
		return what + " at " + w.at() + " must be valid UTF-8"
	}
	return ""
}

// jsonSafe[b] tells whether json.Marshal writes ASCII byte b inside a string
// as is: with HTML escaping on, as json.Marshal has it, every byte from 0x20
// to 0x7f but " \ < > &.
var jsonSafe = func() (t [utf8.RuneSelf]bool) {
	for b := 0x20; b < utf8.RuneSelf; b++ {
		t[b] = true
	}
	for _, b := range `"\<>&` {
		t[b] = false
	}
	return t
}()

const lowerHex = "0123456789abcdef"

// appendText checks s as text does and appends it as encoding/json does,
// in one pass over s. It returns text's reason when s cannot be stored.
func (w *detailsWalker) appendText(what, s string) string {
	b := append(w.buf, '"')
	start := 0
	for i := 0; i < len(s); {
		c := s[i]
		if c < utf8.RuneSelf {
			if jsonSafe[c] {
				i++
				continue
			}
			b = append(b, s[start:i]...)
			switch c {
			case 0:
				// text gives the message, which names NUL before bad UTF-8.
				return w.text(what, s)
			case '\\', '"':
				b = append(b, '\\', c)
			case '\b':
				b = append(b, '\\', 'b')
			case '\f':
				b = append(b, '\\', 'f')
			case '\n':
				b = append(b, '\\', 'n')
			case '\r':
				b = append(b, '\\', 'r')
			case '\t':
				b = append(b, '\\', 't')
			default:
				// Other control characters, and < > & (HTML escaping).
				b = append(b, '\\', 'u', '0', '0', lowerHex[c>>4], lowerHex[c&0xf])
			}
			i++
			start = i
			continue
		}
		r, size := utf8.DecodeRuneInString(s[i:])
		if r == utf8.RuneError && size == 1 {
			return w.text(what, s)
		}
		// U+2028 and U+2029, which JavaScript takes for line ends.
		if r == '\u2028' || r == '\u2029' {
			b = append(b, s[start:i]...)
			b = append(b, '\\', 'u', '2', '0', '2', lowerHex[r&0xf])
			start = i + size
		}
		i += size
	}
	b = append(b, s[start:]...)
	w.buf = append(b, '"')
	return ""
}

// appendNumber appends the finite f as encoding/json does: like
// JavaScript's Number.prototype.toString, 'f' format except for exponents
// below -6 or from 21 up, where 'e' format with no padding of the exponent.
func (w *detailsWalker) appendNumber(f float64) {
	format := byte('f')
	if abs := math.Abs(f); abs != 0 && (abs < 1e-6 || abs >= 1e21) {
		format = 'e'
	}
	b := strconv.AppendFloat(w.buf, f, format, -1, 64)
	if format == 'e' {
		// e-09 to e-9
		if n := len(b); n >= 4 && b[n-4] == 'e' && b[n-3] == '-' && b[n-2] == '0' {
			b[n-2] = b[n-1]
			b = b[:n-1]
		}
	}
	w.buf = b
}

func (w *detailsWalker) object(s *structpb.Struct, depth int) string {
	if depth > MaxDetailsDepth {
		return fmt.Sprintf("must not nest deeper than %d levels (at %s)", MaxDetailsDepth, w.at())
	}
	if r := w.grow(2); r != "" {
		return r
	}
	// Keys in order, for the output and so that the problem reported is the
	// same on every call; the size bound stops a huge object before the
	// sort. This object's fields sit at w.fields[base:] while it is walked.
	base := len(w.fields)
	for k, v := range s.GetFields() {
		if r := w.grow(len(k) + 3); r != "" {
			return r
		}
		w.fields = append(w.fields, detailsField{k, v})
	}
	end := len(w.fields)
	w.fieldsUsed = max(w.fieldsUsed, end)
	slices.SortFunc(w.fields[base:end], func(a, b detailsField) int { return strings.Compare(a.key, b.key) })
	w.buf = append(w.buf, '{')
	for i := base; i < end; i++ {
		// Re-read w.fields: walking a value may have reallocated it.
		f := w.fields[i]
		if i > base {
			w.buf = append(w.buf, ',')
		}
		w.path = append(w.path, detailsStep{key: f.key, index: -1})
		if r := w.appendText("key", f.key); r != "" {
			return r
		}
		w.buf = append(w.buf, ':')
		if r := w.value(f.val, depth); r != "" {
			return r
		}
		w.path = w.path[:len(w.path)-1]
	}
	w.fields = w.fields[:base]
	w.buf = append(w.buf, '}')
	return ""
}

func (w *detailsWalker) list(l *structpb.ListValue, depth int) string {
	if depth > MaxDetailsDepth {
		return fmt.Sprintf("must not nest deeper than %d levels (at %s)", MaxDetailsDepth, w.at())
	}
	if r := w.grow(2); r != "" {
		return r
	}
	w.buf = append(w.buf, '[')
	for i, v := range l.GetValues() {
		if i > 0 {
			w.buf = append(w.buf, ',')
		}
		w.path = append(w.path, detailsStep{index: i})
		if r := w.value(v, depth); r != "" {
			return r
		}
		w.path = w.path[:len(w.path)-1]
	}
	w.buf = append(w.buf, ']')
	return ""
}

// value checks and appends v, which sits inside a container at depth.
func (w *detailsWalker) value(v *structpb.Value, depth int) string {
	switch k := v.GetKind().(type) {
	case *structpb.Value_NullValue:
		return w.null()
	case *structpb.Value_BoolValue:
		switch {
		case k == nil:
			// A typed nil variant, which only Go code builds: AsInterface
			// and so json.Marshal make it null, as here for every variant.
			return w.null()
		case k.BoolValue:
			w.buf = append(w.buf, "true"...)
		default:
			w.buf = append(w.buf, "false"...)
		}
		return w.grow(len("true"))
	case *structpb.Value_NumberValue:
		if k == nil {
			return w.null()
		}
		if math.IsNaN(k.NumberValue) || math.IsInf(k.NumberValue, 0) {
			return "number at " + w.at() + " must be finite (JSON has no NaN or Infinity)"
		}
		w.appendNumber(k.NumberValue)
		return w.grow(1)
	case *structpb.Value_StringValue:
		if k == nil {
			return w.null()
		}
		if r := w.appendText("string", k.StringValue); r != "" {
			return r
		}
		return w.grow(len(k.StringValue) + 2)
	case *structpb.Value_StructValue:
		if k == nil {
			return w.null()
		}
		return w.object(k.StructValue, depth+1)
	case *structpb.Value_ListValue:
		if k == nil {
			return w.null()
		}
		return w.list(k.ListValue, depth+1)
	default:
		// struct.proto: "Absence of any variant indicates an error."
		return "value at " + w.at() + " has no kind set"
	}
}

func (w *detailsWalker) null() string {
	w.buf = append(w.buf, "null"...)
	return w.grow(len("null"))
}
