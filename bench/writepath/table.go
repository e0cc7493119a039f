package writepath

import (
	"fmt"
	"io"
	"math"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"
)

// WriteTable prints what was run, a table of the strategies' figures with
// their ratios against direct, what the figures mean, and the goals.
func (r Result) WriteTable(w io.Writer) error {
	wl := r.Workload
	var work []string
	if wl.Scans > 0 {
		work = append(work, fmt.Sprintf("%s small scans of %s insights", count(int64(wl.Scans)), count(int64(wl.PerScan))))
	}
	if wl.BigScans > 0 {
		work = append(work, fmt.Sprintf("%s big scan%s of %s", count(int64(wl.BigScans)), plural(wl.BigScans), count(int64(wl.Insights))))
	}
	server := "PostgreSQL " + wl.Server
	if wl.Throwaway {
		server = "a throwaway " + server
	}
	fmt.Fprintf(w, "workload: %s (%s rows) from %d checkers\n", strings.Join(work, " + "), count(wl.Rows), wl.Concurrency)
	fmt.Fprintf(w, "scanning: %s\n", scanning(wl))
	fmt.Fprintf(w, "link:     %s RTT (toxiproxy, half each way) between the checkers' region and the database's\n",
		time.Duration(wl.RTTSeconds*float64(time.Second)))
	fmt.Fprintf(w, "pool:     %d connections (per_row's and direct's across the link; the primary's beside %s)\n\n", wl.Pool, server)

	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', tabwriter.AlignRight)
	fmt.Fprintln(tw, "strategy\trows written\tblocked\tblocked %\tvisible\tscans/s\tpush p50\tpush p99\tscans/s ×\tblocked ÷\tvisible ÷\t")
	for _, s := range r.Strategies() {
		name := s.Name
		if s.Extrapolated {
			name += " *"
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t\n", name, count(s.RowsWritten),
			dur(s.BlockedSeconds), percent(s.BlockedShare), dur(s.VisibleSeconds), rate(s.ScansPerSecond), dur(s.PushP50Seconds), dur(s.PushP99Seconds),
			times(s.ScansPerSecondRatio), times(s.BlockedRatio), times(s.VisibleRatio))
	}
	if err := tw.Flush(); err != nil {
		return err
	}
	fmt.Fprintln(w)
	if s := r.PerRow; s != nil && s.Extrapolated && s.Sample != nil {
		fmt.Fprintf(w, "* extrapolated, not measured: %s rows written one INSERT … ON CONFLICT each from %d connections at once,\n"+
			"  %s statements in %s, %s each on average; the workload replayed on that figure (its scan times as they are)\n",
			count(int64(s.Sample.Rows)), wl.Pool, count(int64(s.Sample.Statements)), dur(s.Sample.Seconds), dur(s.Sample.StatementSeconds))
	}
	fmt.Fprint(w, `blocked:  sum over checkers of the time spent in write calls, scanning not included (waiting for a pool
          connection included; longhaul's big scans found over time: inside pushclient Writer's Write and Close)
blocked %: blocked ÷ the checkers' time on their scans (scanning + blocked)
visible:  from the start until every row is visible in PostgreSQL (longhaul: the edge's ledger row polled; the others:
          the end of the last write call, which committed)
scans/s:  scans completed ÷ the time until the last scan's last write call returned
push:     one scan's blocked time (longhaul: pushclient Push to the edge, or a Writer's Writes and Close;
          direct: primary.WriteDirect on a pooled connection; per_row: a transaction of one
          INSERT … ON CONFLICT per insight)
ratios:   against direct, more than 1 is better: scans/s ÷ direct's; direct's blocked ÷ this; direct's visible ÷ this
`)
	if g := r.Goals; g != nil {
		fmt.Fprintf(w, "goals (longhaul vs direct, mixed workload at 80ms): scans/s ≥10×: %s; blocked ≥50× less: %s; visible no later: %s\n",
			met(g.ScansPerSecond), met(g.Blocked), met(g.Visible))
	}
	return nil
}

// scanning says what the checkers do besides writing.
func scanning(wl Workload) string {
	if wl.ScanSeconds == 0 && wl.BigScanSeconds == 0 {
		return "none: the checkers only write (every scan's insights are there at once), so blocked ≈ checkers × time"
	}
	var parts []string
	if wl.Scans > 0 {
		if wl.ScanSeconds > 0 {
			parts = append(parts, "each small scan scans "+dur(wl.ScanSeconds)+" on average (0.5–1.5×), then writes its insights in one call")
		} else {
			parts = append(parts, "small scans write at once")
		}
	}
	if wl.BigScans > 0 {
		if wl.BigScanSeconds > 0 {
			parts = append(parts, "each big scan finds its insights evenly over "+dur(wl.BigScanSeconds)+
				"\n          (per_row, direct: one write call at its end; longhaul: written as found, through a pushclient Writer)")
		} else {
			parts = append(parts, "big scans have their insights at once, and write them in one call")
		}
	}
	return strings.Join(parts, ";\n          ")
}

// percent prints a share as a percentage.
func percent(v float64) string {
	switch p := v * 100; {
	case v == 0:
		return "–"
	case p < 10:
		return strconv.FormatFloat(p, 'f', 1, 64) + " %"
	default:
		return strconv.FormatFloat(p, 'f', 0, 64) + " %"
	}
}

func met(g Goal) string {
	if g.Met {
		return times(g.Ratio) + " met"
	}
	return times(g.Ratio) + " NOT met"
}

// dur prints seconds as a duration to 3 significant digits or so.
func dur(s float64) string {
	d := time.Duration(s * float64(time.Second))
	switch {
	case d == 0:
		return "0"
	case d < time.Millisecond:
		return d.Round(time.Microsecond).String()
	case d < time.Second:
		return d.Round(100 * time.Microsecond).String()
	case d < time.Minute:
		return d.Round(10 * time.Millisecond).String()
	case d < time.Hour:
		return d.Round(time.Second).String()
	}
	return d.Round(time.Minute).String()
}

func rate(v float64) string {
	switch {
	case v >= 100:
		return count(int64(math.Round(v)))
	case v >= 1:
		return strconv.FormatFloat(v, 'f', 1, 64)
	}
	return strconv.FormatFloat(v, 'g', 3, 64)
}

func times(v float64) string {
	switch {
	case v == 0:
		return "–"
	case v >= 100:
		return count(int64(math.Round(v))) + "×"
	case v >= 10:
		return strconv.FormatFloat(v, 'f', 1, 64) + "×"
	case v >= 0.1:
		return strconv.FormatFloat(v, 'f', 2, 64) + "×"
	}
	return strconv.FormatFloat(v, 'g', 2, 64) + "×"
}

// count prints n with thousands separators.
func count(n int64) string {
	s := strconv.FormatInt(n, 10)
	if n < 0 {
		return "-" + count(-n)
	}
	for i := len(s) - 3; i > 0; i -= 3 {
		s = s[:i] + "," + s[i:]
	}
	return s
}

func plural(n int) string {
	if n == 1 {
		return ""
	}
	return "s"
}
