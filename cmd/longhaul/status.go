package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"net/http"
	"strings"
	"text/tabwriter"
	"time"

	longhaulv1 "github.com/longhaul/longhaul/api/longhaul/v1"
	"github.com/longhaul/longhaul/edge"
	"github.com/longhaul/longhaul/internal/tlsconf"
)

// clearScreen moves the cursor home and clears the terminal (ANSI), for
// --watch.
const clearScreen = "\x1b[H\x1b[2J"

// runStatus prints the cluster of edges as one edge sees it: regions,
// nodes, backlog, and each region's stages against its budget.
func runStatus(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("longhaul status", flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.Usage = func() {
		fmt.Fprintln(stderr, `usage: longhaul status [flags]

Asks an edge for the cluster's topology and its budget report, and every
other member alive or suspect for its own, at once; prints the regions
(nodes, backlog, budget), the nodes, and each region's stages against the
budget. A member that does not answer within --timeout is marked so.`)
		fs.PrintDefaults()
	}
	addr := fs.String("edge", "127.0.0.1:7301", "an edge's HTTP address: host:port (https when --tls-ca or --tls-cert is given) or a URL")
	watch := fs.Duration("watch", 0, "redraw every interval (e.g. 2s) until interrupted; 0: print once")
	asJSON := fs.Bool("json", false, "print the combined data as JSON (GET /v1/cluster's form: topology, each member's budget report, the regions); with --watch, one line per interval")
	timeout := fs.Duration("timeout", edge.DefaultClusterTimeout, "how long each edge may take to answer")
	var tlsFlags tlsconf.Flags
	tlsFlags.Register(fs, false, true)
	if err := parse(fs, args); err != nil {
		return err
	}
	if *watch < 0 || *timeout <= 0 {
		return errors.New("--watch must not be negative and --timeout must be positive")
	}
	tc, err := tlsFlags.Client()
	if err != nil {
		return err
	}
	scheme := "http"
	if tc != nil {
		scheme = "https"
	}
	base, err := edge.ParseEdgeURL(*addr, scheme)
	if err != nil {
		return fmt.Errorf("--edge: %w", err)
	}
	tr := http.DefaultTransport.(*http.Transport).Clone()
	tr.TLSClientConfig = tc
	defer tr.CloseIdleConnections()
	client := &http.Client{Transport: tr}

	show := func() error {
		c, err := edge.FetchCluster(ctx, client, base.String(), *timeout)
		if err != nil {
			return err
		}
		if *asJSON {
			var b []byte
			if *watch > 0 {
				b, err = json.Marshal(c)
			} else {
				b, err = json.MarshalIndent(c, "", "  ")
			}
			if err != nil {
				return err
			}
			_, err = fmt.Fprintf(stdout, "%s\n", b)
			return err
		}
		return writeStatus(stdout, c, base.String())
	}
	if *watch == 0 {
		return show()
	}
	tick := time.NewTicker(*watch)
	defer tick.Stop()
	for {
		if !*asJSON {
			fmt.Fprint(stdout, clearScreen)
		}
		if err := show(); err != nil {
			if ctx.Err() != nil {
				return nil
			}
			fmt.Fprintf(stderr, "%s: %v\n", time.Now().Format(time.TimeOnly), err)
		}
		if !*asJSON {
			fmt.Fprintf(stdout, "\nevery %s; Ctrl-C to stop\n", *watch)
		}
		select {
		case <-ctx.Done():
			return nil
		case <-tick.C:
		}
	}
}

// writeStatus prints c as three tables: regions, nodes, and each
// region's stages.
func writeStatus(w io.Writer, c *edge.Cluster, base string) error {
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	row := func(cells ...string) { fmt.Fprintln(tw, strings.Join(cells, "\t")) }
	fmt.Fprintf(tw, "Cluster as edge %s (%s) sees it at %s\n", c.Edge, base, c.Time.UTC().Format("2006-01-02 15:04:05 UTC"))
	fmt.Fprintf(tw, "%s\n\n", summary(c))

	row("REGION", "NODES alive/suspect/dead", "BACKLOG", "OLDEST UNSHIPPED", "BUDGET")
	for _, r := range c.Topology.GetRegions() {
		nodes := fmt.Sprintf("%d/%d/%d", r.GetAlive(), r.GetSuspect(), r.GetDead())
		if r.GetLeft() > 0 {
			nodes += fmt.Sprintf(" (%d left)", r.GetLeft())
		}
		rb, _ := c.Region(r.GetRegion())
		row(r.GetRegion(), nodes, backlog(r.GetBacklogRecords(), r.GetBacklogBytes()), seconds(r.GetOldestUnshippedSeconds()), regionVerdict(rb))
	}
	fmt.Fprintln(tw)

	row("NODE", "REGION", "STATE", "BACKLOG", "OLDEST UNSHIPPED", "BUDGET (gossip)", "BUDGET REPORT")
	for _, m := range c.Topology.GetMembers() {
		name := m.GetName()
		if name == c.Edge {
			name += " *"
		}
		state := strings.ToLower(strings.TrimPrefix(m.GetState().String(), "MEMBER_STATE_"))
		gone := m.GetState() == longhaulv1.MemberState_DEAD || m.GetState() == longhaulv1.MemberState_LEFT
		if m.GetFull() {
			state += ", WAL FULL"
		}
		if m.GetDraining() {
			state += ", draining"
		}
		bl, oldest, budget, report := "-", "-", "-", "not asked ("+state+")"
		if !gone {
			bl, oldest = backlog(m.GetBacklogRecords(), m.GetBacklogBytes()), seconds(m.GetOldestUnshippedSeconds())
			budget = "within"
			if !m.GetWithinBudget() {
				budget = "OVER"
				if m.GetOver() != "" {
					budget = "OVER: " + strings.TrimPrefix(m.GetOver(), "over: ")
				}
			}
		}
		if b, ok := c.Member(m.GetName()); ok {
			report = "ok"
			if b.Report == nil {
				report = "NO ANSWER: " + b.Error
			}
		}
		row(name, m.GetRegion(), state, bl, oldest, budget, report)
	}
	fmt.Fprintf(tw, "(* the edge asked)\n")

	for _, rb := range c.Regions {
		fmt.Fprintf(tw, "\nSTAGES %s: %d of %d members reporting", rb.Region, rb.Reporting, rb.Reporting+rb.Unreachable)
		if rb.Reporting == 0 {
			fmt.Fprintln(tw, "; no budget report")
			continue
		}
		fmt.Fprintf(tw, "; p99 over the last %s; per stage, the member worst off\n", windowOf(c, rb.Region))
		row("STAGE", "P50", "P99", "BUDGET", "VERDICT", "MEMBER", "COUNT")
		for _, st := range rb.Stages {
			verdict := "inside"
			if !st.Within {
				verdict = "OVER"
			}
			row(st.Stage, seconds(st.P50Seconds), seconds(st.P99Seconds), seconds(st.BudgetSeconds), verdict, st.Member, fmt.Sprint(st.Count))
		}
	}
	return tw.Flush()
}

// summary is the verdict in one line: the regions over their budget (or
// all within), and the members that are not alive or did not answer.
func summary(c *edge.Cluster) string {
	var over, unknown []string
	for _, r := range c.Regions {
		switch r.Verdict {
		case "over":
			over = append(over, r.Region)
		case "unknown":
			unknown = append(unknown, r.Region)
		}
	}
	var parts []string
	switch {
	case len(over) > 0:
		parts = append(parts, "OVER BUDGET: "+strings.Join(over, ", "))
	case len(unknown) == 0:
		parts = append(parts, fmt.Sprintf("all %d regions within budget", len(c.Regions)))
	}
	if len(unknown) > 0 {
		parts = append(parts, "no budget report from "+strings.Join(unknown, ", "))
	}
	var down, silent int
	for _, m := range c.Topology.GetMembers() {
		if m.GetState() != longhaulv1.MemberState_ALIVE {
			down++
		}
	}
	for _, b := range c.Budgets {
		if b.Report == nil {
			silent++
		}
	}
	if down > 0 {
		parts = append(parts, fmt.Sprintf("%d of %d members not alive", down, len(c.Topology.GetMembers())))
	}
	if silent > 0 {
		parts = append(parts, fmt.Sprintf("%d not answering", silent))
	}
	return strings.Join(parts, "; ")
}

// regionVerdict is a region's budget column: within, OVER and what is
// over, or unknown; and how many members did not answer.
func regionVerdict(rb edge.RegionBudget) string {
	var s string
	switch rb.Verdict {
	case "within":
		s = "within"
	case "over":
		var over []string
		v := rb.Visible
		if !rb.Ack.Within {
			over = append(over, fmt.Sprintf("ack p99 %s/%s (%s)", seconds(rb.Ack.P99Seconds), seconds(rb.Ack.BudgetSeconds), rb.Ack.Member))
		}
		if !v.Within && v.P99Seconds > v.BudgetSeconds {
			over = append(over, fmt.Sprintf("visible p99 %s/%s (%s)", seconds(v.P99Seconds), seconds(v.BudgetSeconds), v.Member))
		}
		if !v.Within && v.OldestPendingSeconds > v.BudgetSeconds {
			over = append(over, fmt.Sprintf("oldest pending %s > visible %s (%s)", seconds(v.OldestPendingSeconds), seconds(v.BudgetSeconds), v.Member))
		}
		s = "OVER: " + strings.Join(over, "; ")
	default:
		s = "unknown: no member answered"
	}
	if rb.Unreachable > 0 && rb.Reporting > 0 {
		s += fmt.Sprintf(" [%d of %d no answer]", rb.Unreachable, rb.Reporting+rb.Unreachable)
	}
	return s
}

// windowOf is the budget window of region's reports.
func windowOf(c *edge.Cluster, region string) time.Duration {
	for _, b := range c.Budgets {
		if b.Region == region && b.Report != nil {
			return time.Duration(b.Report.WindowSeconds * float64(time.Second))
		}
	}
	return 0
}

func backlog(records, bytes int64) string {
	return fmt.Sprintf("%d records, %s", records, byteSize(bytes))
}

// seconds writes a duration in seconds with about three significant
// digits ("-" for none).
func seconds(sec float64) string {
	if sec <= 0 {
		return "-"
	}
	d := time.Duration(sec * float64(time.Second))
	for _, r := range []struct{ above, round time.Duration }{
		{10 * time.Second, 100 * time.Millisecond}, {time.Second, 10 * time.Millisecond},
		{10 * time.Millisecond, 100 * time.Microsecond}, {time.Millisecond, 10 * time.Microsecond},
		{0, time.Microsecond},
	} {
		if d >= r.above {
			d = d.Round(r.round)
			break
		}
	}
	return d.String()
}

func byteSize(n int64) string {
	const unit = 1024
	if n < unit {
		return fmt.Sprintf("%d B", n)
	}
	v, i := float64(n), -1
	for v >= unit && i < 3 {
		v /= unit
		i++
	}
	return fmt.Sprintf("%.3g %ciB", v, "KMGT"[i])
}
