package writepath

// Result is what Run measured. As JSON it is one object with an entry per
// strategy that ran (per_row, direct, longhaul), the workload, and the goals.
type Result struct {
	Workload Workload  `json:"workload"`
	PerRow   *Strategy `json:"per_row,omitempty"`
	Direct   *Strategy `json:"direct,omitempty"`
	Longhaul *Strategy `json:"longhaul,omitempty"`
	// Goals are the project's goals for longhaul against direct (stated
	// for the mixed workload at 80 ms); nil unless both ran.
	Goals *Goals `json:"goals,omitempty"`
}

// Strategies returns the strategies that ran, in the order they ran.
func (r Result) Strategies() []*Strategy {
	var out []*Strategy
	for _, s := range []*Strategy{r.PerRow, r.Direct, r.Longhaul} {
		if s != nil {
			out = append(out, s)
		}
	}
	return out
}

// Workload is what was run, and where.
type Workload struct {
	Scans    int   `json:"scans"`
	PerScan  int   `json:"per_scan"`
	BigScans int   `json:"big_scans"`
	Insights int   `json:"insights"` // per big scan
	Rows     int64 `json:"rows"`
	// ScanSeconds and BigScanSeconds: how long each small scan and each
	// big scan scans (Config.ScanTime, Config.BigScanTime).
	ScanSeconds    float64 `json:"scan_seconds"`
	BigScanSeconds float64 `json:"big_scan_seconds"`
	Concurrency    int     `json:"concurrency"`
	Pool           int     `json:"pool"`
	RTTSeconds     float64 `json:"rtt_seconds"`
	Sample         int     `json:"sample"`
	DetailsBytes   int     `json:"details_bytes"`
	// CopyThreshold is the rows from which direct and the primary use COPY.
	CopyThreshold int `json:"copy_threshold"`
	// Server is PostgreSQL's version; Throwaway says whether Run started it.
	Server    string `json:"server"`
	Throwaway bool   `json:"throwaway"`
}

// Strategy is one strategy's figures; see the package documentation for
// their definitions.
type Strategy struct {
	Name string `json:"name"`
	// Extrapolated: the figures are computed from a sample (Sample), not
	// measured on the whole workload.
	Extrapolated bool `json:"extrapolated"`
	Scans        int  `json:"scans"`
	// Rows is what the workload writes; RowsWritten what the strategy's
	// schema held at the end (the sample's rows when Extrapolated).
	Rows           int64   `json:"rows"`
	RowsWritten    int64   `json:"rows_written"`
	BlockedSeconds float64 `json:"blocked_seconds"`
	// CheckerSeconds is the sum over scans of their checker's time on
	// them, scanning and blocked; BlockedShare is BlockedSeconds ÷
	// CheckerSeconds (the seed's checkers: 0.2 to 0.9).
	CheckerSeconds float64 `json:"checker_seconds"`
	BlockedShare   float64 `json:"blocked_share"`
	VisibleSeconds float64 `json:"visible_seconds"`
	// WriteSeconds is the time until the last write call returned.
	WriteSeconds   float64 `json:"write_seconds"`
	ScansPerSecond float64 `json:"scans_per_second"`
	PushP50Seconds float64 `json:"push_p50_seconds"`
	PushP99Seconds float64 `json:"push_p99_seconds"`
	PushMaxSeconds float64 `json:"push_max_seconds"`
	// Ratios against direct, each more than 1 when this strategy does
	// better: scans/s ÷ direct's; direct's blocked ÷ this one's ("× less");
	// direct's visible ÷ this one's. 0 when direct did not run.
	ScansPerSecondRatio float64 `json:"scans_per_second_ratio"`
	BlockedRatio        float64 `json:"blocked_ratio"`
	VisibleRatio        float64 `json:"visible_ratio"`
	// Sample is per_row's measurement when it was extrapolated.
	Sample *Sample `json:"sample,omitempty"`
}

// Sample is what per_row measured to extrapolate from.
type Sample struct {
	Rows       int     `json:"rows"`
	Statements int     `json:"statements"` // BEGIN, one per row, COMMIT
	Seconds    float64 `json:"seconds"`
	// StatementSeconds is the mean time of one statement (a round trip
	// across the link and PostgreSQL's work), measured with Pool
	// connections busy at once: every figure comes from it.
	StatementSeconds float64 `json:"statement_seconds"`
}

// Goals are the README's goals for longhaul against direct on the mixed
// workload at 80 ms, with what this run measured.
type Goals struct {
	ScansPerSecond Goal `json:"scans_per_second"` // ≥ 10× direct's
	Blocked        Goal `json:"blocked"`          // ≥ 50× less than direct
	Visible        Goal `json:"visible"`          // no later than direct (ratio ≥ 1)
}

// Goal is one goal: Ratio (as in Strategy) must be at least Want.
type Goal struct {
	Want  float64 `json:"want"`
	Ratio float64 `json:"ratio"`
	Met   bool    `json:"met"`
}

func goal(want, got float64) Goal { return Goal{Want: want, Ratio: got, Met: got >= want} }

// compare fills in the ratios against direct, and the goals.
func (r *Result) compare() {
	d := r.Direct
	if d == nil {
		return
	}
	for _, s := range r.Strategies() {
		s.ScansPerSecondRatio = ratio(s.ScansPerSecond, d.ScansPerSecond)
		s.BlockedRatio = ratio(d.BlockedSeconds, s.BlockedSeconds)
		s.VisibleRatio = ratio(d.VisibleSeconds, s.VisibleSeconds)
	}
	if l := r.Longhaul; l != nil {
		r.Goals = &Goals{
			ScansPerSecond: goal(10, l.ScansPerSecondRatio),
			Blocked:        goal(50, l.BlockedRatio),
			Visible:        goal(1, l.VisibleRatio),
		}
	}
}
