package edge

import (
	"bytes"
	"cmp"
	"context"
	"crypto/sha256"
	_ "embed"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"slices"
	"strings"
	"sync"
	"time"

	"google.golang.org/protobuf/encoding/protojson"

	longhaulv1 "github.com/longhaul/longhaul/api/longhaul/v1"
)

// The status page and the cluster view.
//
//	GET /           redirects to /ui
//	GET /ui         the status page: one self-contained HTML document (inline
//	                CSS and JS, nothing fetched from elsewhere) that polls
//	                /v1/cluster every second
//	GET /v1/cluster the cluster as this edge sees it: its topology and the
//	                budget report of every member alive or suspect (see
//	                Cluster); `longhaul status` shows the same through
//	                FetchCluster

//go:embed ui/index.html
var statusPage []byte

// statusPageCSP allows the page's own inline script and style (by hash)
// and requests to the edge itself, nothing else: the page works offline
// and cannot be made to load anything from elsewhere.
var statusPageCSP = func() string {
	// hash is the sha256 source expression of the text between the
	// first start tag and the end tag after it.
	hash := func(start, end string) string {
		_, rest, found := bytes.Cut(statusPage, []byte(start))
		body, _, closed := bytes.Cut(rest, []byte(end))
		if !found || !closed {
			panic("edge: ui/index.html lacks " + start + "…" + end)
		}
		sum := sha256.Sum256(body)
		return "'sha256-" + base64.StdEncoding.EncodeToString(sum[:]) + "'"
	}
	return "default-src 'none'; script-src " + hash("<script>", "</script>") +
		"; style-src " + hash("<style>", "</style>") +
		"; connect-src 'self'; img-src data:; base-uri 'none'; form-action 'none'; frame-ancestors 'none'"
}()

// DefaultClusterTimeout bounds each member's answer when a Cluster is
// collected.
const DefaultClusterTimeout = 2 * time.Second

// clusterCacheFor is how long /v1/cluster answers from the last collection:
// several pages open at once ask the members once a second between them,
// not once each.
const clusterCacheFor = 500 * time.Millisecond

// Cluster is the cluster of edges as one edge sees it: its topology and
// the budget report of each member alive or suspect, fetched at once. GET
// /v1/cluster answers it; FetchCluster collects it from outside (longhaul
// status). Its JSON:
//
//	{"edge": "eu/n1", "time": "2025-01-02T15:04:05.123Z",
//	 "topology": {…GET /v1/topology's answer…},
//	 "budgets": [{"member": "eu/n1", "region": "eu", "http": "10.0.0.1:7301", "report": {…GET /v1/budget…}},
//	             {"member": "us/n2", "region": "us", "http": "10.1.0.2:7301", "error": "…: connection refused"}],
//	 "regions": [{"region": "eu", "verdict": "within", "reporting": 1, "unreachable": 0,
//	              "ack": {…Verdict…, "member": "eu/n1"}, "visible": {…VisibleVerdict…, "member": "eu/n1"},
//	              "stages": [{"stage": "validation", "p50_seconds": …, "p99_seconds": …,
//	                          "budget_seconds": …, "within": true, "count": 1200, "member": "eu/n1"}, …]}, …]}
type Cluster struct {
	// Edge is the name of the edge asked ("region/node_id").
	Edge string
	// Time is when the collection started.
	Time time.Time
	// Topology is the edge's GET /v1/topology.
	Topology *longhaulv1.ListMembersResponse
	// Budgets holds one entry per member alive or suspect, in the
	// topology's order (by name).
	Budgets []MemberBudget
	// Regions holds one entry per region of the topology, sorted.
	Regions []RegionBudget
}

// MemberBudget is one member's budget report, or why there is none.
type MemberBudget struct {
	Member string `json:"member"`
	Region string `json:"region"`
	HTTP   string `json:"http"`
	// Report is the member's GET /v1/budget; nil when it did not answer.
	Report *BudgetReport `json:"report,omitempty"`
	// Error says why Report is nil.
	Error string `json:"error,omitempty"`
}

// RegionBudget is a region's latency against its budget: for each stage,
// the numbers of the member that is worst off (over its budget first, then
// the highest p99 as a fraction of its budget), since a region meets its
// budget only when each of its edges does.
type RegionBudget struct {
	Region string `json:"region"`
	// Verdict is "within" when every member that answered is within its
	// budget, "over" when one is not, "unknown" when none answered.
	Verdict string `json:"verdict"`
	// Reporting members answered; Unreachable ones (alive or suspect in
	// the topology) did not.
	Reporting   int `json:"reporting"`
	Unreachable int `json:"unreachable"`
	// Ack and Visible are the worst member's verdicts.
	Ack     MemberVerdict        `json:"ack"`
	Visible MemberVisibleVerdict `json:"visible"`
	// Stages in the order of BudgetReport.Stages. Count sums the members'.
	Stages []RegionStage `json:"stages"`
}

// MemberVerdict is a Verdict and the member it is from.
type MemberVerdict struct {
	Verdict
	Member string `json:"member"`
}

// MemberVisibleVerdict is a VisibleVerdict and the member it is from.
type MemberVisibleVerdict struct {
	VisibleVerdict
	Member string `json:"member"`
}

// RegionStage is a stage's StageReport in a region and the member it is from.
type RegionStage struct {
	StageReport
	Member string `json:"member"`
}

type clusterJSON struct {
	Edge     string          `json:"edge"`
	Time     time.Time       `json:"time"`
	Topology json.RawMessage `json:"topology"`
	Budgets  []MemberBudget  `json:"budgets"`
	Regions  []RegionBudget  `json:"regions"`
}

// topologyJSON is how the gateway writes GET /v1/topology.
var topologyJSON = protojson.MarshalOptions{UseProtoNames: true, EmitUnpopulated: true}

// MarshalJSON writes the topology as GET /v1/topology does (protojson).
func (c *Cluster) MarshalJSON() ([]byte, error) {
	topo, err := topologyJSON.Marshal(c.Topology)
	if err != nil {
		return nil, err
	}
	return json.Marshal(clusterJSON{Edge: c.Edge, Time: c.Time, Topology: topo, Budgets: c.Budgets, Regions: c.Regions})
}

// UnmarshalJSON reads what MarshalJSON writes; unknown fields are ignored.
func (c *Cluster) UnmarshalJSON(b []byte) error {
	var cj clusterJSON
	if err := json.Unmarshal(b, &cj); err != nil {
		return err
	}
	topo := &longhaulv1.ListMembersResponse{}
	if len(cj.Topology) > 0 && string(cj.Topology) != "null" {
		if err := (protojson.UnmarshalOptions{DiscardUnknown: true}).Unmarshal(cj.Topology, topo); err != nil {
			return fmt.Errorf("topology: %w", err)
		}
	}
	*c = Cluster{Edge: cj.Edge, Time: cj.Time, Topology: topo, Budgets: cj.Budgets, Regions: cj.Regions}
	return nil
}

// Member returns the budget entry of the member named name.
func (c *Cluster) Member(name string) (MemberBudget, bool) {
	i := slices.IndexFunc(c.Budgets, func(b MemberBudget) bool { return b.Member == name })
	if i < 0 {
		return MemberBudget{}, false
	}
	return c.Budgets[i], true
}

// Region returns the budget of the region named name.
func (c *Cluster) Region(name string) (RegionBudget, bool) {
	i := slices.IndexFunc(c.Regions, func(r RegionBudget) bool { return r.Region == name })
	if i < 0 {
		return RegionBudget{}, false
	}
	return c.Regions[i], true
}

// FetchCluster collects the Cluster as the edge at base sees it: base is
// the edge's HTTP address, a URL ("http://10.0.0.1:7301",
// "https://edge.eu.example") or host:port (then http). It fetches the
// edge's GET /v1/topology and GET /v1/budget, and GET /v1/budget of every
// other member alive or suspect at its advertised HTTP address (with base's
// scheme), all at once, each within timeout (DefaultClusterTimeout when 0).
// A member that does not answer has its entry's Error set; only a topology
// the edge does not give is an error.
func FetchCluster(ctx context.Context, client *http.Client, base string, timeout time.Duration) (*Cluster, error) {
	if client == nil {
		client = http.DefaultClient
	}
	if timeout <= 0 {
		timeout = DefaultClusterTimeout
	}
	u, err := ParseEdgeURL(base, "http")
	if err != nil {
		return nil, err
	}
	start := time.Now()
	tctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	topoURL := u.JoinPath("v1/topology").String()
	body, err := getJSON(tctx, client, topoURL, 16<<20)
	if err != nil {
		return nil, fmt.Errorf("edge: the cluster's topology: %w", err)
	}
	topo := &longhaulv1.ListMembersResponse{}
	if err := (protojson.UnmarshalOptions{DiscardUnknown: true}).Unmarshal(body, topo); err != nil {
		return nil, fmt.Errorf("edge: the cluster's topology: GET %s: %w", topoURL, err)
	}
	self := func(ctx context.Context) (*BudgetReport, error) {
		return fetchBudget(ctx, client, u.JoinPath("v1/budget").String())
	}
	return collectCluster(ctx, topo, start, self, client, u.Scheme, timeout), nil
}

// ParseEdgeURL parses an edge's HTTP address: a URL, or host:port, which
// takes scheme ("http" or "https").
func ParseEdgeURL(addr, scheme string) (*url.URL, error) {
	s := strings.TrimSpace(addr)
	if !strings.Contains(s, "://") {
		s = scheme + "://" + s
	}
	u, err := url.Parse(s)
	if err != nil {
		return nil, fmt.Errorf("edge: address %q: %w", addr, err)
	}
	if (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		return nil, fmt.Errorf("edge: address %q: want host:port or http(s)://host:port", addr)
	}
	u.Path = strings.TrimSuffix(u.Path, "/") + "/"
	u.RawQuery, u.Fragment = "", ""
	return u, nil
}

// collectCluster asks each member alive or suspect of topo for its budget
// report (self, the member topo.Self, through selfBudget; the others
// over HTTP), all at once, each within timeout, and sums up the regions.
func collectCluster(ctx context.Context, topo *longhaulv1.ListMembersResponse, start time.Time,
	selfBudget func(context.Context) (*BudgetReport, error), client *http.Client, scheme string, timeout time.Duration) *Cluster {
	c := &Cluster{Edge: topo.GetSelf(), Time: start, Topology: topo}
	for _, m := range topo.GetMembers() {
		if s := m.GetState(); s == longhaulv1.MemberState_ALIVE || s == longhaulv1.MemberState_SUSPECT || m.GetName() == topo.GetSelf() {
			c.Budgets = append(c.Budgets, MemberBudget{Member: m.GetName(), Region: m.GetRegion(), HTTP: m.GetHttp()})
		}
	}
	var wg sync.WaitGroup
	for i := range c.Budgets {
		b := &c.Budgets[i]
		wg.Go(func() {
			ctx, cancel := context.WithTimeout(ctx, timeout)
			defer cancel()
			var err error
			switch {
			case b.Member == topo.GetSelf():
				b.Report, err = selfBudget(ctx)
			case b.HTTP == "":
				err = errors.New("no HTTP address advertised")
			default:
				b.Report, err = fetchBudget(ctx, client, (&url.URL{Scheme: scheme, Host: b.HTTP, Path: "/v1/budget"}).String())
			}
			if err != nil {
				b.Report, b.Error = nil, describeFetchError(err, timeout)
			}
		})
	}
	wg.Wait()
	for _, r := range topo.GetRegions() {
		c.Regions = append(c.Regions, regionBudget(r.GetRegion(), c.Budgets))
	}
	return c
}

// describeFetchError says why a member gave no budget report, without
// the URL (the entry names the member and its address).
func describeFetchError(err error, timeout time.Duration) string {
	var ne net.Error
	if errors.Is(err, context.DeadlineExceeded) || errors.As(err, &ne) && ne.Timeout() {
		return fmt.Sprintf("no answer within %s", timeout)
	}
	var ue *url.Error
	if errors.As(err, &ue) {
		return ue.Err.Error()
	}
	return err.Error()
}

// regionBudget sums up the reports of region's members.
func regionBudget(region string, budgets []MemberBudget) RegionBudget {
	rb := RegionBudget{Region: region, Verdict: "unknown"}
	var reports []MemberBudget
	for _, b := range budgets {
		switch {
		case b.Region != region:
		case b.Report == nil:
			rb.Unreachable++
		default:
			reports = append(reports, b)
		}
	}
	rb.Reporting = len(reports)
	if len(reports) == 0 {
		return rb
	}
	rb.Verdict = "within"
	for _, b := range reports {
		if !b.Report.Within {
			rb.Verdict = "over"
		}
	}
	// worse orders verdicts: over the budget first, then by p99 as a
	// fraction of the budget.
	worse := func(within bool, p99, budget float64, thanWithin bool, thanP99, thanBudget float64) bool {
		if within != thanWithin {
			return !within
		}
		return cmp.Compare(ratio(p99, budget), ratio(thanP99, thanBudget)) > 0
	}
	for i, b := range reports {
		r := b.Report
		if i == 0 || worse(r.Ack.Within, r.Ack.P99Seconds, r.Ack.BudgetSeconds, rb.Ack.Within, rb.Ack.P99Seconds, rb.Ack.BudgetSeconds) {
			rb.Ack = MemberVerdict{Verdict: r.Ack, Member: b.Member}
		}
		if i == 0 || worse(r.Visible.Within, r.Visible.P99Seconds, r.Visible.BudgetSeconds, rb.Visible.Within, rb.Visible.P99Seconds, rb.Visible.BudgetSeconds) {
			rb.Visible = MemberVisibleVerdict{VisibleVerdict: r.Visible, Member: b.Member}
		}
		for _, st := range r.Stages {
			j := slices.IndexFunc(rb.Stages, func(s RegionStage) bool { return s.Stage == st.Stage })
			if j < 0 {
				rb.Stages = append(rb.Stages, RegionStage{StageReport: st, Member: b.Member})
				continue
			}
			cur := &rb.Stages[j]
			count := cur.Count + st.Count
			if worse(st.Within, st.P99Seconds, st.BudgetSeconds, cur.Within, cur.P99Seconds, cur.BudgetSeconds) {
				cur.StageReport, cur.Member = st, b.Member
			}
			cur.Count = count
		}
	}
	return rb
}

// ratio is p99 as a fraction of budget; a zero budget is met only by zero.
func ratio(p99, budget float64) float64 {
	switch {
	case budget > 0:
		return p99 / budget
	case p99 > 0:
		return 1e9 + p99
	}
	return 0
}

func fetchBudget(ctx context.Context, client *http.Client, url string) (*BudgetReport, error) {
	body, err := getJSON(ctx, client, url, 1<<20)
	if err != nil {
		return nil, err
	}
	var r BudgetReport
	if err := json.Unmarshal(body, &r); err != nil {
		return nil, fmt.Errorf("GET %s: %w", url, err)
	}
	return &r, nil
}

// getJSON GETs url and returns its body, at most limit bytes, when the
// answer is 200.
func getJSON(ctx context.Context, client *http.Client, url string, limit int64) ([]byte, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return nil, err
	}
	req.Header.Set("Accept", "application/json")
	resp, err := client.Do(req)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(io.LimitReader(resp.Body, limit+1))
	if err != nil {
		return nil, fmt.Errorf("GET %s: %w", url, err)
	}
	if int64(len(body)) > limit {
		return nil, fmt.Errorf("GET %s: answer over %d bytes", url, limit)
	}
	if resp.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("GET %s: %s: %.200s", url, resp.Status, bytes.TrimSpace(body))
	}
	return body, nil
}

// statusUI serves the status page and /v1/cluster.
type statusUI struct {
	s *Service
	// client asks the other members for their budget reports, over
	// scheme: https when the edges serve TLS (Config.TLS), trusting
	// Config.PeerTLS.
	client *http.Client
	scheme string

	mu   sync.Mutex // held while collecting: one collection at a time
	last *Cluster
}

// registerUI serves GET /, /ui and /v1/cluster on mux.
func (s *Service) registerUI(mux *http.ServeMux) {
	tr := http.DefaultTransport.(*http.Transport).Clone()
	tr.MaxIdleConnsPerHost = 2
	u := &statusUI{s: s, client: &http.Client{Transport: tr, Timeout: DefaultClusterTimeout}, scheme: "http"}
	if s.cfg.TLS != nil {
		u.scheme, tr.TLSClientConfig = "https", s.cfg.PeerTLS
	}
	mux.HandleFunc("GET /{$}", func(w http.ResponseWriter, r *http.Request) {
		http.Redirect(w, r, "/ui", http.StatusFound)
	})
	mux.HandleFunc("GET /ui", u.servePage)
	mux.HandleFunc("GET /v1/cluster", u.serveCluster)
}

func (u *statusUI) servePage(w http.ResponseWriter, _ *http.Request) {
	h := w.Header()
	h.Set("Content-Type", "text/html; charset=utf-8")
	h.Set("Content-Security-Policy", statusPageCSP)
	h.Set("X-Content-Type-Options", "nosniff")
	h.Set("Referrer-Policy", "no-referrer")
	h.Set("Cache-Control", "no-cache")
	_, _ = w.Write(statusPage)
}

func (u *statusUI) serveCluster(w http.ResponseWriter, r *http.Request) {
	c, err := u.cluster(r.Context())
	if err != nil {
		http.Error(w, err.Error(), http.StatusInternalServerError)
		return
	}
	body, err := json.Marshal(c)
	if err != nil {
		http.Error(w, err.Error(), http.StatusInternalServerError)
		return
	}
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Cache-Control", "no-store")
	_, _ = w.Write(body)
}

// cluster collects the Cluster, or returns the last collection when it is
// younger than clusterCacheFor.
func (u *statusUI) cluster(ctx context.Context) (*Cluster, error) {
	u.mu.Lock()
	defer u.mu.Unlock()
	if u.last != nil && time.Since(u.last.Time) < clusterCacheFor {
		return u.last, nil
	}
	start := time.Now()
	topo, err := u.s.topo.server.ListMembers(ctx, &longhaulv1.ListMembersRequest{})
	if err != nil {
		return nil, err
	}
	self := func(context.Context) (*BudgetReport, error) {
		r := u.s.Budget()
		return &r, nil
	}
	// Not the request's context: the collection serves the pages that
	// wait behind it too.
	u.last = collectCluster(context.WithoutCancel(ctx), topo, start, self, u.client, u.scheme, DefaultClusterTimeout)
	return u.last, nil
}
