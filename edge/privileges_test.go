package edge

import (
	"context"
	"fmt"
	"log/slog"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/prometheus/client_golang/prometheus"
	"google.golang.org/protobuf/types/known/timestamppb"

	longhaulv1 "github.com/longhaul/longhaul/api/longhaul/v1"
	"github.com/longhaul/longhaul/internal/pgtest"
	"github.com/longhaul/longhaul/primary"
)

// primaryGrants are the privileges the primary's database role needs once
// another role (the owner) has migrated the schema: the README's Security
// section lists them. Nothing is deleted from a permanent table; the COPY
// path's staging table is a temporary one.
var primaryGrants = []string{
	"GRANT CONNECT, TEMPORARY ON DATABASE %[1]s TO %[2]s",
	"GRANT USAGE ON SCHEMA public TO %[2]s",
	"GRANT SELECT ON schema_migrations TO %[2]s",
	"GRANT SELECT, INSERT, UPDATE ON insights, scans, edge_ledger TO %[2]s",
	"GRANT INSERT ON dead_letters TO %[2]s",
}

// TestPrimaryLeastPrivilege: a primary whose role holds only primaryGrants
// (no CREATE on the schema, nothing for PUBLIC) starts on a migrated
// database, applies batches through both write paths (UNNEST and COPY into
// its temporary staging table), records a completion and resolves, and
// can write a dead letter; it cannot create a table.
func TestPrimaryLeastPrivilege(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	owner := pgtest.Database(t)
	u, err := url.Parse(owner)
	if err != nil {
		t.Fatal(err)
	}
	db := u.Path[1:]
	role := "primary_" + db
	admin, err := pgx.Connect(ctx, owner)
	if err != nil {
		t.Fatal(err)
	}
	defer admin.Close(ctx)
	if _, err := admin.Exec(ctx, "CREATE ROLE "+role+" LOGIN"); err != nil {
		t.Skipf("cannot create a role on this server: %v", err)
	}
	t.Cleanup(func() {
		ctx := context.Background()
		c, err := pgx.Connect(ctx, owner)
		if err != nil {
			t.Errorf("drop role: %v", err)
			return
		}
		defer c.Close(ctx)
		_, _ = c.Exec(ctx, "DROP OWNED BY "+role)
		if _, err := c.Exec(ctx, "DROP ROLE "+role); err != nil {
			t.Errorf("drop role: %v", err)
		}
	})
	for _, q := range append([]string{"REVOKE ALL ON SCHEMA public FROM PUBLIC", "REVOKE ALL ON DATABASE %[1]s FROM PUBLIC"}, primaryGrants...) {
		if strings.Contains(q, "%") {
			q = fmt.Sprintf(q, db, role)
		}
		if _, err := admin.Exec(ctx, q); err != nil {
			t.Fatalf("%s: %v", q, err)
		}
	}
	u.User = url.User(role)
	reg := prometheus.NewRegistry()
	p, err := primary.Start(ctx, primary.Config{DatabaseURL: u.String(), Listen: "127.0.0.1:0", HTTPListen: "127.0.0.1:0",
		Logger: slog.New(slog.DiscardHandler), Applier: primary.ApplierConfig{CopyThreshold: 100}, Registry: reg})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = p.Stop(context.Background()) })
	s := startSystemTBWith(t, Config{Primary: p.Addr()}, owner)

	t0 := time.Now().Add(-time.Minute)
	big := make([]*longhaulv1.Insight, 1000)
	for i := range big {
		big[i] = insight("scan-p", "k", fmt.Sprint(i), t0)
	}
	for _, ins := range [][]*longhaulv1.Insight{big, big[:3]} {
		if _, err := s.ingest.Push(ctx, &longhaulv1.PushRequest{Insights: ins}); err != nil {
			t.Fatal(err)
		}
		// One batch each: the first over the COPY threshold, the second not.
		eventually(t, "the push shipped", func() (bool, string) {
			st := s.edge.WAL().Stats()
			return st.Records == 0, fmt.Sprint(st.Records, " records")
		})
	}
	if _, err := s.ingest.CompleteScan(ctx, &longhaulv1.CompleteScanRequest{Completion: &longhaulv1.ScanCompletion{ScanId: "scan-q",
		AccountId: "acme", Asset: "www.example.com", Checker: "tls", InsightCount: 1, StartedAt: timestamppb.New(t0.Add(time.Second))}}); err != nil {
		t.Fatal(err)
	}
	if _, err := s.ingest.Push(ctx, &longhaulv1.PushRequest{Insights: []*longhaulv1.Insight{insight("scan-q", "k", "new", t0.Add(2*time.Second))}}); err != nil {
		t.Fatal(err)
	}
	eventually(t, "scan-p's insights resolved by scan-q", func() (bool, string) {
		n := s.count(t, `SELECT count(*) FROM insights WHERE resolved_at IS NOT NULL`)
		return n == 1000, fmt.Sprint(n)
	})
	rows := map[string]float64{}
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() == "longhaul_primary_rows_total" {
			for _, m := range mf.GetMetric() {
				rows[m.GetLabel()[0].GetValue()] = m.GetCounter().GetValue()
			}
		}
	}
	if rows[string(primary.PathCopy)] == 0 || rows[string(primary.PathUnnest)] == 0 {
		t.Fatalf("rows by write path %v: want both used", rows)
	}
	rc, err := pgx.Connect(ctx, u.String())
	if err != nil {
		t.Fatal(err)
	}
	defer rc.Close(ctx)
	if _, err := rc.Exec(ctx, `INSERT INTO dead_letters (edge_id, first_seq, last_seq, insight_key, sqlstate, reason, payload)
		VALUES ('eu/n1', 1, 1, 'k', '22000', 'test', '\x00')`); err != nil {
		t.Fatalf("dead letter: %v", err)
	}
	if _, err := rc.Exec(ctx, `CREATE TABLE not_allowed (a int)`); err == nil {
		t.Fatal("the role could create a table")
	}
}
