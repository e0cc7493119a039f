package scheduler

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"testing"

	"github.com/longhaul/longhaul/primary/migrate"
)

// item is one asset of a POST /v1/assets body, with fields to override.
func item(over string) string {
	fields := map[string]string{
		"account_id": `"acme"`, "asset": `"x.example"`, "plan": `"pro"`, "checks": `["tls","headers"]`,
	}
	for f := range strings.SplitSeq(over, ";") {
		if k, v, ok := strings.Cut(f, "="); ok {
			if v == "-" {
				delete(fields, k)
			} else {
				fields[k] = v
			}
		}
	}
	var parts []string
	for _, k := range []string{"account_id", "asset", "plan", "checks", "plans"} {
		if v, ok := fields[k]; ok {
			parts = append(parts, fmt.Sprintf("%q:%s", k, v))
		}
	}
	return "{" + strings.Join(parts, ",") + "}"
}

func assetsBody(items ...string) string { return `{"assets":[` + strings.Join(items, ",") + `]}` }

// TestBadInput: every refused body answers 400 (or 413) naming the field,
// and nothing is written; a valid request right after succeeds.
func TestBadInput(t *testing.T) {
	t.Parallel()
	b := setup(t, true, Config{})
	tooMany := make([]string, MaxAssetsPerRequest+1)
	for i := range tooMany {
		tooMany[i] = fmt.Sprintf(`{"account_id":"a","asset":"%d","plan":"free","checks":["tls"]}`, i)
	}
	for _, tc := range []struct {
		name, path, body string
		code             int
		field            string
	}{
		{"unknown plan", "/v1/assets", assetsBody(item(`plan="gold"`)), 400, "assets[0].plan"},
		{"plan not a string", "/v1/assets", assetsBody(item(`plan=5`)), 400, "assets[0].plan"},
		{"missing account", "/v1/assets", assetsBody(item(`account_id=-`)), 400, "assets[0].account_id"},
		{"null asset", "/v1/assets", assetsBody(item(`asset=null`)), 400, "assets[0].asset"},
		{"account too long", "/v1/assets", assetsBody(item(`account_id="` + strings.Repeat("a", MaxTextBytes+1) + `"`)), 400, "assets[0].account_id"},
		{"invalid UTF-8", "/v1/assets", assetsBody(item("asset=\"x\xff\"")), 400, "assets[0].asset"},
		{"lone surrogate", "/v1/assets", assetsBody(item(`asset="\ud800"`)), 400, "assets[0].asset"},
		{"NUL", "/v1/assets", assetsBody(item(`asset="a\u0000b"`)), 400, "assets[0].asset"},
		{"no checks", "/v1/assets", assetsBody(item(`checks=[]`)), 400, "assets[0].checks"},
		{"checks missing", "/v1/assets", assetsBody(item(`checks=-`)), 400, "assets[0].checks"},
		{"checks not an array", "/v1/assets", assetsBody(item(`checks="tls"`)), 400, "assets[0].checks"},
		{"duplicate check", "/v1/assets", assetsBody(item(`checks=["tls","headers","tls"]`)), 400, "assets[0].checks[2]"},
		{"check not a name", "/v1/assets", assetsBody(item(`checks=["TLS"]`)), 400, "assets[0].checks[0]"},
		{"check with a dot", "/v1/assets", assetsBody(item(`checks=["tls.expiry"]`)), 400, "assets[0].checks[0]"},
		{"check not a string", "/v1/assets", assetsBody(item(`checks=["tls",7]`)), 400, "assets[0].checks[1]"},
		{"unknown field", "/v1/assets", assetsBody(item(`plans=1`)), 400, "assets[0].plans"},
		{"second item bad", "/v1/assets", assetsBody(item(""), item(`asset="y";plan="gold"`)), 400, "assets[1].plan"},
		{"duplicate asset", "/v1/assets", assetsBody(item(""), item("")), 400, "assets[1].asset"},
		{"item not an object", "/v1/assets", assetsBody("5"), 400, "assets[0]"},
		{"no assets", "/v1/assets", assetsBody(), 400, "assets"},
		{"assets null", "/v1/assets", `{"assets":null}`, 400, "assets"},
		{"unknown top-level field", "/v1/assets", `{"asset":[]}`, 400, "asset"},
		{"not JSON", "/v1/assets", `assets`, 400, "body"},
		{"not an object", "/v1/assets", `[]`, 400, "body"},
		{"truncated item", "/v1/assets", `{"assets":[{"account_id":"acme"`, 400, "assets[0]"},
		{"truncated", "/v1/assets", `{"assets":[`, 400, "body"},
		{"empty", "/v1/assets", ``, 400, "body"},
		{"more after the value", "/v1/assets", assetsBody(item("")) + ` {}`, 400, "body"},
		{"too many assets", "/v1/assets", assetsBody(tooMany...), 400, "assets"},
		{"body too large", "/v1/assets", `{"assets":[` + strings.Repeat(" ", MaxAssetsBody) + `]}`, 413, "body"},

		{"scan: no account", "/v1/scans", `{}`, 400, "account_id"},
		{"scan: empty account", "/v1/scans", `{"account_id":""}`, 400, "account_id"},
		{"scan: account not a string", "/v1/scans", `{"account_id":5}`, 400, "account_id"},
		{"scan: NUL", "/v1/scans", `{"account_id":"a\u0000"}`, 400, "account_id"},
		{"scan: empty asset", "/v1/scans", `{"account_id":"acme","asset":""}`, 400, "asset"},
		{"scan: kind without a check", "/v1/scans", `{"account_id":"acme","kind":".expiry"}`, 400, "kind"},
		{"scan: kind without a rest", "/v1/scans", `{"account_id":"acme","kind":"tls"}`, 400, "kind"},
		{"scan: kind with an empty rest", "/v1/scans", `{"account_id":"acme","kind":"tls."}`, 400, "kind"},
		{"scan: kind's check not a name", "/v1/scans", `{"account_id":"acme","kind":"TLS.expiry"}`, 400, "kind"},
		{"scan: unknown field", "/v1/scans", `{"account_id":"acme","assets":"x"}`, 400, "assets"},
		{"scan: not JSON", "/v1/scans", `scan`, 400, "body"},
		{"scan: more after the value", "/v1/scans", `{"account_id":"acme"} []`, 400, "body"},
		{"scan: body too large", "/v1/scans", `{"account_id":"` + strings.Repeat("a", MaxScanBody) + `"}`, 413, "body"},
		{"scan: unknown account", "/v1/scans", `{"account_id":"nobody"}`, 404, "account_id"},
	} {
		var got errorBody
		code := b.post(t, tc.path, []byte(tc.body), &got)
		if code != tc.code || got.Field != tc.field || !strings.HasPrefix(got.Error, tc.field) {
			t.Errorf("%s: %d %+v, want %d naming %s", tc.name, code, got, tc.code, tc.field)
		}
	}
	if n := b.count(t, `SELECT (SELECT count(*) FROM assets) + (SELECT count(*) FROM scan_requests)`); n != 0 {
		t.Fatalf("%d rows written by refused requests", n)
	}

	// A valid request right after.
	var reg registered
	if code := b.post(t, "/v1/assets", []byte(assetsBody(item(""), item(`asset="y.example";checks=["headers"]`))), &reg); code != 200 || reg.Created != 2 {
		t.Fatalf("valid registration: %d %+v", code, reg)
	}
	for _, tc := range []struct {
		body  string
		code  int
		field string
	}{
		{`{"account_id":"acme","asset":"z.example"}`, 404, "asset"},
		{`{"account_id":"acme","kind":"dns.records"}`, 404, "kind"},
		{`{"account_id":"acme","asset":"y.example","kind":"tls.expiry"}`, 404, "kind"},
	} {
		var got errorBody
		if code := b.post(t, "/v1/scans", []byte(tc.body), &got); code != tc.code || got.Field != tc.field {
			t.Errorf("%s: %d %+v, want %d naming %s", tc.body, code, got, tc.code, tc.field)
		}
	}
	var acc accepted
	if code := b.post(t, "/v1/scans", []byte(`{"account_id":"acme","kind":"headers.csp"}`), &acc); code != 202 || acc.Assets != 2 {
		t.Fatalf("valid scan request: %d %+v, want 202 for 2 assets", code, acc)
	}
	if n := b.count(t, `SELECT count(*) FROM scan_requests`); n != 1 {
		t.Fatalf("%d scan requests recorded, want the valid one", n)
	}
}

// unread fails the test if the handler reads the body.
type unread struct{ t *testing.T }

func (u unread) Read([]byte) (int, error) {
	u.t.Error("the body of an announced oversized request was read")
	return 0, io.EOF
}

// TestOversizedBody: a body announced larger than the limit is refused
// with 413 before any of it is read; one that does not announce its length
// is refused with 413 once it passes the limit.
func TestOversizedBody(t *testing.T) {
	t.Parallel()
	s := &Service{}
	for path, limit := range map[string]int64{"/v1/assets": MaxAssetsBody, "/v1/scans": MaxScanBody} {
		req := httptest.NewRequest(http.MethodPost, path, unread{t})
		req.ContentLength = limit + 1
		w := httptest.NewRecorder()
		if path == "/v1/assets" {
			s.handleAssets(w, req)
		} else {
			s.handleScans(w, req)
		}
		var got errorBody
		if err := json.NewDecoder(bytes.NewReader(w.Body.Bytes())).Decode(&got); err != nil || w.Code != 413 || got.Field != "body" {
			t.Errorf("%s: %d %s, want 413 naming the body", path, w.Code, w.Body)
		}
	}
	for path, limit := range map[string]int{"/v1/assets": MaxAssetsBody, "/v1/scans": MaxScanBody} {
		body := io.MultiReader(strings.NewReader(`{"assets":[`), strings.NewReader(strings.Repeat(" ", limit)), strings.NewReader(`]}`))
		req := httptest.NewRequest(http.MethodPost, path, body)
		req.ContentLength = -1
		w := httptest.NewRecorder()
		if path == "/v1/assets" {
			s.handleAssets(w, req)
		} else {
			s.handleScans(w, req)
		}
		if w.Code != 413 {
			t.Errorf("%s, length not announced: %d %s, want 413", path, w.Code, w.Body)
		}
	}
}

// TestFreshSchemaAndEndpoints: Start migrates an empty schema; /readyz
// checks the database, the schema and Kafka; /metrics has the scheduler's
// metrics.
func TestFreshSchemaAndEndpoints(t *testing.T) {
	t.Parallel()
	b := setup(t, true, Config{})
	b.exec(t, `CREATE SCHEMA fresh`)
	t.Cleanup(func() { _, _ = b.pool.Exec(b.ctx, `DROP SCHEMA fresh CASCADE`) })
	u, err := url.Parse(b.url)
	if err != nil {
		t.Fatal(err)
	}
	q := u.Query()
	q.Set("options", "-c search_path=fresh")
	u.RawQuery = strings.ReplaceAll(q.Encode(), "+", "%20")
	fresh := &bundle{ctx: b.ctx, url: u.String(), kafka: b.kafka}
	svc := fresh.start(t, Config{Now: b.clock.Now, manual: true})
	if n := b.count(t, `SELECT max(version) FROM fresh.schema_migrations`); n != int64(migrate.Latest()) {
		t.Fatalf("fresh schema at version %d, want %d", n, migrate.Latest())
	}

	get := func(path string) (int, string) {
		resp, err := http.Get("http://" + svc.HTTPAddr() + path)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		body, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, string(body)
	}
	if code, body := get("/readyz"); code != 200 || !strings.Contains(body, `"kafka":"ok"`) || !strings.Contains(body, `"schema":"ok"`) {
		t.Errorf("/readyz: %d %s", code, body)
	}
	_, metrics := get("/metrics")
	for _, name := range []string{"longhaul_scheduler_rate 1.5", "longhaul_scheduler_due_assets", "longhaul_scheduler_produce_errors_total",
		`longhaul_scheduler_assets{plan="free"} 0`} {
		if !strings.Contains(metrics, name) {
			t.Errorf("/metrics lacks %s", name)
		}
	}
	if code, _ := get("/v1/assets"); code != http.StatusMethodNotAllowed {
		t.Errorf("GET /v1/assets: %d, want 405", code)
	}
}
