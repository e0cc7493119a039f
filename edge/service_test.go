package edge

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"
	"google.golang.org/genproto/googleapis/rpc/errdetails"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/mem"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/structpb"
	"google.golang.org/protobuf/types/known/timestamppb"

	longhaulv1 "github.com/longhaul/longhaul/api/longhaul/v1"
	"github.com/longhaul/longhaul/internal/pgtest"
	"github.com/longhaul/longhaul/primary"
)

// system is a primary on a real PostgreSQL and an edge shipping to it.
type system struct {
	primary *primary.Service
	edge    *Service
	db      *pgxpool.Pool
	ingest  longhaulv1.IngestClient
	http    string
	dbURL   string
}

func startSystem(t *testing.T, edgeCfg Config) *system { return startSystemTB(t, edgeCfg) }

func startSystemB(b *testing.B) *system { return startSystemTB(b, Config{}) }

// startPrimary starts a primary writing to url on listen (":0" style),
// stopped when t ends.
func startPrimary(t testing.TB, url, listen string) *primary.Service {
	t.Helper()
	p, err := primary.Start(context.Background(), primary.Config{DatabaseURL: url, Listen: listen, HTTPListen: "127.0.0.1:0",
		Logger: slog.New(slog.DiscardHandler)})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = p.Stop(context.Background()) })
	return p
}

func startSystemTB(t testing.TB, edgeCfg Config) *system {
	t.Helper()
	url := pgtest.URL(t)
	p := startPrimary(t, url, "127.0.0.1:0")
	edgeCfg.Primary = p.Addr()
	s := startSystemTBWith(t, edgeCfg, url)
	s.primary = p
	return s
}

// startSystemTBWith starts an edge shipping to edgeCfg.Primary, whose
// database is url.
func startSystemTBWith(t testing.TB, edgeCfg Config, url string) *system {
	t.Helper()
	ctx := context.Background()
	db, err := pgxpool.New(ctx, url)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(db.Close)
	if edgeCfg.Region == "" {
		edgeCfg.Region = "eu"
	}
	if edgeCfg.NodeID == "" {
		edgeCfg.NodeID = "n1"
	}
	edgeCfg.DataDir = t.TempDir()
	edgeCfg.Listen, edgeCfg.HTTPListen = "127.0.0.1:0", "127.0.0.1:0"
	edgeCfg.Logger = slog.New(slog.DiscardHandler)
	if edgeCfg.Shipper.MaxBatchAge == 0 {
		edgeCfg.Shipper.MaxBatchAge = 20 * time.Millisecond
	}
	e, err := Start(ctx, edgeCfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = e.Stop(context.Background()) })
	ingest, _ := dialIngest(t, e.Addr())
	return &system{edge: e, db: db, ingest: ingest, http: "http://" + e.HTTPAddr(), dbURL: url}
}

func insight(scan, kind, subject string, observed time.Time) *longhaulv1.Insight {
	details, _ := structpb.NewStruct(map[string]any{"subject": subject, "n": 1})
	return &longhaulv1.Insight{AccountId: "acme", Asset: "www.example.com", Kind: kind, Subject: subject,
		Severity: longhaulv1.Severity_HIGH, Details: details, ObservedAt: timestamppb.New(observed), ScanId: scan, Checker: "tls"}
}

// dialIngest returns an Ingest client of the edge at addr, closed when t ends.
func dialIngest(t testing.TB, addr string) (longhaulv1.IngestClient, *grpc.ClientConn) {
	t.Helper()
	cc, err := grpc.NewClient(addr, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cc.Close() })
	return longhaulv1.NewIngestClient(cc), cc
}

// eventually polls cond until it holds or the deadline passes.
func eventually(t *testing.T, what string, cond func() (bool, string)) {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for {
		ok, state := cond()
		if ok {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s: still %s after 30s", what, state)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func (s *system) count(t *testing.T, q string, args ...any) int {
	t.Helper()
	var n int
	if err := s.db.QueryRow(context.Background(), q, args...).Scan(&n); err != nil {
		t.Fatal(err)
	}
	return n
}

func postJSON(t *testing.T, url, body string) (int, string, http.Header) {
	t.Helper()
	resp, err := http.Post(url, "application/json", strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b), resp.Header
}

// TestEndToEnd: insights pushed through gRPC (unary and streaming) and
// HTTP/JSON appear in PostgreSQL, and a scan completion resolves what the
// scan no longer saw.
func TestEndToEnd(t *testing.T) {
	t.Parallel()
	s := startSystem(t, Config{})
	ctx := context.Background()
	t0 := time.Now().Add(-time.Minute).Truncate(time.Microsecond)
	_, cc := dialIngest(t, s.edge.Addr())
	if h, err := healthpb.NewHealthClient(cc).Check(ctx, &healthpb.HealthCheckRequest{Service: "longhaul.v1.Ingest"}); err != nil || h.Status != healthpb.HealthCheckResponse_SERVING {
		t.Fatalf("gRPC health: %v, %v", h, err)
	}
	for _, path := range []string{"/healthz", "/readyz", "/metrics"} {
		resp, err := http.Get(s.http + path)
		if err != nil || resp.StatusCode != http.StatusOK {
			t.Fatalf("GET %s: %v %v", path, resp, err)
		}
		resp.Body.Close()
	}

	// Scan 1 (gRPC Push): three findings.
	resp, err := s.ingest.Push(ctx, &longhaulv1.PushRequest{Insights: []*longhaulv1.Insight{
		insight("scan-1", "tls.expiry", "443", t0), insight("scan-1", "tls.expiry", "8443", t0), insight("scan-1", "tls.weak", "443", t0),
	}})
	if err != nil {
		t.Fatal(err)
	}
	if resp.Accepted != 3 || resp.LastSeq-resp.FirstSeq != 2 {
		t.Fatalf("push answer %v", resp)
	}
	if _, err := s.ingest.CompleteScan(ctx, &longhaulv1.CompleteScanRequest{Completion: &longhaulv1.ScanCompletion{
		ScanId: "scan-1", AccountId: "acme", Asset: "www.example.com", Checker: "tls", InsightCount: 3, StartedAt: timestamppb.New(t0)}}); err != nil {
		t.Fatal(err)
	}

	// Scan 2 (gRPC PushStream, then HTTP): sees two of them.
	t1 := t0.Add(10 * time.Second)
	stream, err := s.ingest.PushStream(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if err := stream.Send(&longhaulv1.PushRequest{Insights: []*longhaulv1.Insight{insight("scan-2", "tls.expiry", "443", t1)}}); err != nil {
		t.Fatal(err)
	}
	sresp, err := stream.CloseAndRecv()
	if err != nil || sresp.Accepted != 1 {
		t.Fatalf("stream: %v, %v", sresp, err)
	}
	code, body, _ := postJSON(t, s.http+"/v1/insights:push", fmt.Sprintf(`{"insights":[{"account_id":"acme","asset":"www.example.com",
		"kind":"tls.weak","subject":"443","severity":"CRITICAL","details":{"cipher":"RC4"},"observed_at":%q,"scan_id":"scan-2","checker":"tls"}]}`,
		t1.Format(time.RFC3339Nano)))
	if code != http.StatusOK || !strings.Contains(body, `"accepted":"1"`) {
		t.Fatalf("HTTP push: %d %s", code, body)
	}
	code, body, _ = postJSON(t, s.http+"/v1/scans:complete", fmt.Sprintf(`{"scan_id":"scan-2","account_id":"acme","asset":"www.example.com",
		"checker":"tls","insight_count":2,"started_at":%q}`, t1.Format(time.RFC3339Nano)))
	if code != http.StatusOK {
		t.Fatalf("HTTP complete: %d %s", code, body)
	}

	eventually(t, "scan-2 resolved", func() (bool, string) {
		n := s.count(t, `SELECT count(*) FROM scans WHERE scan_id = 'scan-2' AND resolved_at IS NOT NULL`)
		return n == 1, "unresolved"
	})
	rows, err := s.db.Query(ctx, `SELECT kind, subject, severity, details->>'cipher', scan_id, resolved_at IS NOT NULL FROM insights ORDER BY 1, 2`)
	if err != nil {
		t.Fatal(err)
	}
	var got []string
	for rows.Next() {
		var kind, subject, severity, scan string
		var cipher *string
		var resolved bool
		if err := rows.Scan(&kind, &subject, &severity, &cipher, &scan, &resolved); err != nil {
			t.Fatal(err)
		}
		c := ""
		if cipher != nil {
			c = *cipher
		}
		got = append(got, fmt.Sprintf("%s/%s %s %s %s resolved=%v", kind, subject, severity, c, scan, resolved))
	}
	want := []string{
		"tls.expiry/443 high  scan-2 resolved=false",
		"tls.expiry/8443 high  scan-1 resolved=true",
		"tls.weak/443 critical RC4 scan-2 resolved=false",
	}
	if strings.Join(got, "\n") != strings.Join(want, "\n") {
		t.Fatalf("insights:\n%s\nwant:\n%s", strings.Join(got, "\n"), strings.Join(want, "\n"))
	}
	// Everything shipped is truncated from the WAL.
	eventually(t, "WAL drained", func() (bool, string) {
		st := s.edge.WAL().Stats()
		return st.Records == 0, fmt.Sprintf("%d records", st.Records)
	})
}

// TestBadInput: malformed requests over gRPC and HTTP each get a clear
// InvalidArgument / 4xx naming the field, nothing is written, the edge
// stays up, and a valid push right after succeeds.
func TestBadInput(t *testing.T) {
	t.Parallel()
	s := startSystem(t, Config{MaxRequestBytes: 1 << 20})
	ctx := context.Background()
	now := time.Now()
	valid := func() *longhaulv1.Insight { return insight("scan-b", "k", "s", now) }

	grpcCases := map[string]struct {
		mutate func(*longhaulv1.Insight)
		field  string
	}{
		"missing account":  {func(in *longhaulv1.Insight) { in.AccountId = "" }, "insights[1].account_id"},
		"missing subject":  {func(in *longhaulv1.Insight) { in.Subject = "" }, "insights[1].subject"},
		"NUL in asset":     {func(in *longhaulv1.Insight) { in.Asset = "a\x00b" }, "insights[1].asset"},
		"control in kind":  {func(in *longhaulv1.Insight) { in.Kind = "a\x1bb" }, "insights[1].kind"},
		"no severity":      {func(in *longhaulv1.Insight) { in.Severity = 0 }, "insights[1].severity"},
		"unknown severity": {func(in *longhaulv1.Insight) { in.Severity = 17 }, "insights[1].severity"},
		"no observed_at":   {func(in *longhaulv1.Insight) { in.ObservedAt = nil }, "insights[1].observed_at"},
		"far future":       {func(in *longhaulv1.Insight) { in.ObservedAt = timestamppb.New(now.Add(24 * time.Hour)) }, "insights[1].observed_at"},
		"NUL in details":   {func(in *longhaulv1.Insight) { in.Details.Fields["x"] = structpb.NewStringValue("\x00") }, "insights[1].details"},
		"huge details": {func(in *longhaulv1.Insight) {
			in.Details.Fields["x"] = structpb.NewStringValue(strings.Repeat("x", 17<<10))
		}, "insights[1].details"},
		"subject too long":  {func(in *longhaulv1.Insight) { in.Subject = strings.Repeat("s", 2000) }, "insights[1].subject"},
		"missing checker":   {func(in *longhaulv1.Insight) { in.Checker = "" }, "insights[1].checker"},
		"missing scan":      {func(in *longhaulv1.Insight) { in.ScanId = "" }, "insights[1].scan_id"},
		"control in scanid": {func(in *longhaulv1.Insight) { in.ScanId = "a\nb" }, "insights[1].scan_id"},
	}
	for name, c := range grpcCases {
		bad := valid()
		c.mutate(bad)
		_, err := s.ingest.Push(ctx, &longhaulv1.PushRequest{Insights: []*longhaulv1.Insight{valid(), bad}})
		st := status.Convert(err)
		if st.Code() != codes.InvalidArgument || !strings.Contains(st.Message(), c.field) {
			t.Errorf("gRPC %s: %v, want InvalidArgument naming %s", name, err, c.field)
			continue
		}
		var named bool
		for _, d := range st.Details() {
			if br, ok := d.(*errdetails.BadRequest); ok && len(br.FieldViolations) > 0 && br.FieldViolations[0].Field == c.field {
				named = true
			}
		}
		if !named {
			t.Errorf("gRPC %s: no BadRequest detail naming %s: %v", name, c.field, st.Details())
		}
	}
	if _, err := s.ingest.Push(ctx, &longhaulv1.PushRequest{}); status.Code(err) != codes.InvalidArgument {
		t.Errorf("empty push: %v", err)
	}
	if _, err := s.ingest.CompleteScan(ctx, &longhaulv1.CompleteScanRequest{}); status.Code(err) != codes.InvalidArgument {
		t.Errorf("empty completion: %v", err)
	}
	// Garbage protobuf on the wire.
	cc, _ := grpc.NewClient(s.edge.Addr(), grpc.WithTransportCredentials(insecure.NewCredentials()))
	defer cc.Close()
	var out longhaulv1.PushResponse
	err := cc.Invoke(ctx, "/longhaul.v1.Ingest/Push", rawMessage{0xff, 0xff, 0xff, 0x0a, 0x05}, &out, grpc.ForceCodecV2(rawCodec{}))
	if c := status.Code(err); c != codes.Internal && c != codes.InvalidArgument {
		t.Errorf("garbage protobuf: %v", err)
	}

	ts := now.Format(time.RFC3339Nano)
	good := fmt.Sprintf(`{"account_id":"acme","asset":"a","kind":"k","subject":"s","severity":"HIGH","details":{},"observed_at":%q,"scan_id":"x","checker":"c"}`, ts)
	httpCases := map[string]struct {
		body string
		code int
		want string
	}{
		"truncated JSON":      {`{"insights":[` + good, 400, ""},
		"not JSON":            {`hello`, 400, ""},
		"wrong type":          {`{"insights":"many"}`, 400, "many"},
		"number for a string": {strings.Replace(`{"insights":[`+good+`]}`, `"asset":"a"`, `"asset":7`, 1), 400, "asset"},
		"unknown field":       {`{"insights":[` + good + `],"extra":1}`, 400, "extra"},
		"unknown severity":    {strings.Replace(`{"insights":[`+good+`]}`, `"HIGH"`, `"SEVERE"`, 1), 400, "SEVERE"},
		"details an array":    {strings.Replace(`{"insights":[`+good+`]}`, `"details":{}`, `"details":[1]`, 1), 400, "details"},
		"missing key field":   {strings.Replace(`{"insights":[`+good+`]}`, `"kind":"k",`, ``, 1), 400, "insights[0].kind"},
		"NUL escape":          {strings.Replace(`{"insights":[`+good+`]}`, `"subject":"s"`, `"subject":"a\u0000b"`, 1), 400, "insights[0].subject"},
		"invalid UTF-8":       {strings.Replace(`{"insights":[`+good+`]}`, `"subject":"s"`, "\"subject\":\"a\xffb\"", 1), 400, ""},
		"huge body":           {`{"insights":[` + strings.Repeat(good+",", 8000) + good + `]}`, 413, ""},
		"empty completion":    {`{}`, 400, "completion"},
	}
	for name, c := range httpCases {
		path := "/v1/insights:push"
		if name == "empty completion" {
			path = "/v1/scans:complete"
		}
		code, body, _ := postJSON(t, s.http+path, c.body)
		if code != c.code || !strings.Contains(body, c.want) {
			t.Errorf("HTTP %s: %d %.200s, want %d mentioning %q", name, code, body, c.code, c.want)
		}
	}
	// A huge body sent without Content-Length is cut off, not read whole.
	req, _ := http.NewRequest("POST", s.http+"/v1/insights:push", io.MultiReader(strings.NewReader(`{"insights":[`), &endless{}))
	req.ContentLength = -1
	if resp, err := http.DefaultClient.Do(req); err == nil {
		resp.Body.Close()
		if resp.StatusCode != http.StatusRequestEntityTooLarge {
			t.Errorf("endless body: %d, want 413", resp.StatusCode)
		}
	}

	if st := s.edge.WAL().Stats(); st.AppendedRecords != 0 {
		t.Fatalf("bad input wrote %d records", st.AppendedRecords)
	}
	// The edge is still up, and a valid push succeeds.
	if _, err := s.ingest.Push(ctx, &longhaulv1.PushRequest{Insights: []*longhaulv1.Insight{valid()}}); err != nil {
		t.Fatalf("valid push after bad input: %v", err)
	}
	if code, body, _ := postJSON(t, s.http+"/v1/insights:push", `{"insights":[`+good+`]}`); code != 200 {
		t.Fatalf("valid HTTP push after bad input: %d %s", code, body)
	}
	eventually(t, "valid pushes applied", func() (bool, string) {
		n := s.count(t, `SELECT count(*) FROM insights`)
		return n == 2, fmt.Sprint(n, " rows")
	})
}

// TestFullWALRefusesThenRecovers: with the primary unreachable the WAL
// fills; pushes then get RESOURCE_EXHAUSTED / 429 with a retry hint and
// nothing acknowledged is dropped, and /readyz fails while pushes are
// refused (also short of the quota: a large push refused); once shipping
// resumes, pushes succeed and /readyz recovers.
func TestFullWALRefusesThenRecovers(t *testing.T) {
	t.Parallel()
	s := startSystem(t, Config{QuotaBytes: 64 << 10})
	ctx := context.Background()
	if err := s.primary.Stop(ctx); err != nil {
		t.Fatal(err)
	}
	accepted := 0
	var full error
	for i := 0; full == nil && i < 10000; i++ {
		_, err := s.ingest.Push(ctx, &longhaulv1.PushRequest{Insights: []*longhaulv1.Insight{insight("scan-f", "k", fmt.Sprint(i), time.Now())}})
		if err != nil {
			full = err
			break
		}
		accepted++
	}
	st := status.Convert(full)
	if st.Code() != codes.ResourceExhausted {
		t.Fatalf("after %d pushes: %v, want RESOURCE_EXHAUSTED", accepted, full)
	}
	var hint bool
	for _, d := range st.Details() {
		if ri, ok := d.(*errdetails.RetryInfo); ok && ri.RetryDelay.AsDuration() > 0 {
			hint = true
		}
	}
	if !hint {
		t.Errorf("RESOURCE_EXHAUSTED without a retry hint: %v", st.Details())
	}
	// Fill what room is left through HTTP too.
	code, hdr := http.StatusOK, http.Header{}
	for i := 0; code == http.StatusOK && i < 1000; i++ {
		body := fmt.Sprintf(`{"insights":[{"account_id":"acme","asset":"a","kind":"k","subject":"h%d","severity":"HIGH","observed_at":%q,"scan_id":"x","checker":"c"}]}`,
			i, time.Now().Format(time.RFC3339Nano))
		code, _, hdr = postJSON(t, s.http+"/v1/insights:push", body)
		if code == http.StatusOK {
			accepted++
		}
	}
	if code != http.StatusTooManyRequests || hdr.Get("Retry-After") == "" {
		t.Fatalf("HTTP push when full: %d, Retry-After %q; want 429 with a hint", code, hdr.Get("Retry-After"))
	}
	readyz := func() (int, string) {
		resp, err := http.Get(s.http + "/readyz")
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, string(b)
	}
	if code, body := readyz(); code != http.StatusServiceUnavailable || !strings.Contains(body, "WAL_FULL") && !strings.Contains(body, "full") {
		t.Errorf("/readyz while pushes are refused: %d %s; want 503 saying why", code, body)
	}

	// The primary comes back (same database): everything acknowledged
	// arrives, and the edge accepts again.
	startPrimary(t, s.dbURL, s.primary.Addr())
	eventually(t, "all acknowledged insights applied", func() (bool, string) {
		n := s.count(t, `SELECT count(*) FROM insights WHERE scan_id IN ('scan-f', 'x')`)
		return n == accepted, fmt.Sprintf("%d of %d", n, accepted)
	})
	eventually(t, "pushes accepted again", func() (bool, string) {
		_, err := s.ingest.Push(ctx, &longhaulv1.PushRequest{Insights: []*longhaulv1.Insight{insight("scan-g", "k", "after", time.Now())}})
		return err == nil, fmt.Sprint(err)
	})
	eventually(t, "/readyz ready again", func() (bool, string) {
		code, body := readyz()
		return code == http.StatusOK, fmt.Sprint(code, " ", body)
	})
}

// TestReadyzFailsWhileAPushIsRefusedShortOfTheQuota: a push too large for
// the room left is refused WAL_FULL though the WAL is well below its quota;
// /readyz says so for as long as the refused checker was told to wait.
func TestReadyzFailsWhileAPushIsRefusedShortOfTheQuota(t *testing.T) {
	t.Parallel()
	s := startSystem(t, Config{QuotaBytes: 64 << 10})
	ctx := context.Background()
	if err := s.primary.Stop(ctx); err != nil {
		t.Fatal(err)
	}
	var big []*longhaulv1.Insight
	for i := range 1000 {
		big = append(big, insight("scan-big", "k", fmt.Sprint(i), time.Now()))
	}
	_, err := s.ingest.Push(ctx, &longhaulv1.PushRequest{Insights: big})
	if status.Code(err) != codes.ResourceExhausted {
		t.Fatalf("a push larger than the quota: %v, want RESOURCE_EXHAUSTED", err)
	}
	resp, err := http.Get(s.http + "/readyz")
	if err != nil {
		t.Fatal(err)
	}
	b, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != http.StatusServiceUnavailable || !strings.Contains(string(b), "refusing pushes") {
		t.Errorf("/readyz after a refusal with the WAL empty: %d %s; want 503, refusing pushes", resp.StatusCode, b)
	}
}

// rawMessage and rawCodec send bytes as they are, to put garbage on the wire.
type rawMessage []byte

type rawCodec struct{}

func (rawCodec) Name() string { return "proto" }

func (rawCodec) Marshal(v any) (mem.BufferSlice, error) {
	return mem.BufferSlice{mem.SliceBuffer(v.(rawMessage))}, nil
}

func (rawCodec) Unmarshal(data mem.BufferSlice, v any) error {
	return fmt.Errorf("unused: %d bytes for %T", data.Len(), v)
}

type endless struct{}

func (endless) Read(p []byte) (int, error) {
	for i := range p {
		p[i] = ' '
	}
	return len(p), nil
}
