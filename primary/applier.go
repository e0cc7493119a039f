package primary

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/prometheus/client_golang/prometheus"
	"google.golang.org/protobuf/proto"

	longhaulv1 "github.com/longhaul/longhaul/api/longhaul/v1"
)

// DefaultCopyThreshold is the batch size (rows after collapsing duplicates)
// from which the applier writes with COPY instead of UNNEST. It is the
// crossover `longhaul bench apply` measured on the project's reference
// machine (2 cores, PostgreSQL 15); --copy-threshold overrides it and
// --copy-threshold=auto measures it on the live database at start.
const DefaultCopyThreshold = 1000

// ApplierConfig configures an Applier.
type ApplierConfig struct {
	// CopyThreshold: batches of at least this many rows go through COPY into
	// the staging table and one merge; smaller ones through one UNNEST
	// upsert. Default DefaultCopyThreshold.
	CopyThreshold int
	// Retries is how many times a transaction that lost a deadlock or a
	// serialization conflict is tried again. Default 5.
	Retries int
	// Logger defaults to slog.Default().
	Logger *slog.Logger
	// Registerer receives the applier's metrics; nil registers nothing.
	Registerer prometheus.Registerer
}

func (c *ApplierConfig) setDefaults() {
	if c.CopyThreshold == 0 {
		c.CopyThreshold = DefaultCopyThreshold
	}
	if c.Retries == 0 {
		c.Retries = 5
	}
	if c.Logger == nil {
		c.Logger = slog.Default()
	}
}

func (c *ApplierConfig) validate() error {
	if c.CopyThreshold < 1 {
		return fmt.Errorf("primary: CopyThreshold must be at least 1, got %d", c.CopyThreshold)
	}
	if c.Retries < 0 {
		return fmt.Errorf("primary: Retries must not be negative, got %d", c.Retries)
	}
	return nil
}

// Applier writes batches of insights into PostgreSQL, each in one short
// transaction, exactly once per edge sequence range. It is safe for
// concurrent use; concurrent batches lock rows in key order, so they do not
// deadlock on insights.
type Applier struct {
	pool    *pgxpool.Pool
	cfg     ApplierConfig
	log     *slog.Logger
	metrics *applierMetrics
}

// NewApplier returns an applier writing through pool, whose database must
// be migrated (migrate.Up).
func NewApplier(pool *pgxpool.Pool, cfg ApplierConfig) (*Applier, error) {
	cfg.setDefaults()
	if err := cfg.validate(); err != nil {
		return nil, err
	}
	m, err := newApplierMetrics(cfg.Registerer)
	if err != nil {
		return nil, err
	}
	return &Applier{pool: pool, cfg: cfg, log: cfg.Logger, metrics: m}, nil
}

// Path names how a batch's rows were written.
type Path string

const (
	PathNone   Path = "none"   // nothing to write (duplicate, out of sequence, no insights)
	PathUnnest Path = "unnest" // one INSERT … SELECT FROM unnest(…) ON CONFLICT
	PathCopy   Path = "copy"   // COPY into the staging table, then one merge
	PathSplit  Path = "split"  // a row was refused: halves retried, refused rows dead-lettered
)

// Result tells what Apply did with a batch.
type Result struct {
	Status      longhaulv1.Ack_Status
	AppliedSeq  uint64 // the edge's applied sequence after the batch
	Rows        int    // rows written (after collapsing duplicates)
	Collapsed   int    // observations collapsed into a winner of the same key
	DeadLetters int
	Resolved    int // insights resolved by completions that became ready
	Path        Path
	Duration    time.Duration
}

// ErrInvalidBatch is returned for a batch that cannot be applied as sent
// (no edge id, a sequence range that runs backwards).
var ErrInvalidBatch = errors.New("primary: invalid batch")

// Apply applies b in one transaction, together with the advance of the
// edge's ledger. A batch whose range was applied before is acknowledged
// as DUPLICATE without writing; one that does not start right after the
// ledger is OUT_OF_SEQUENCE, also without writing. Apply may reorder
// b.Insights.
func (a *Applier) Apply(ctx context.Context, b *longhaulv1.Batch) (Result, error) {
	return a.apply(ctx, b, nil, nil)
}

// apply is Apply with the batch's insights already collapsed when p is
// not nil (by prepare, from the same batch), and, when t is not nil, in
// its turn among a stream's batches applied at once (see turn).
func (a *Applier) apply(ctx context.Context, b *longhaulv1.Batch, p *prepared, t *turn) (Result, error) {
	if b.EdgeId == "" {
		return Result{}, fmt.Errorf("%w: edge_id is empty", ErrInvalidBatch)
	}
	if b.FirstSeq == 0 || b.LastSeq < b.FirstSeq {
		return Result{}, fmt.Errorf("%w: sequence range %d..%d", ErrInvalidBatch, b.FirstSeq, b.LastSeq)
	}
	start := time.Now()
	// When not given, prepared once the ledger says the batch is to be
	// written (a replayed batch costs no sorting); kept across retries.
	var res Result
	var err error
	for attempt := 0; ; attempt++ {
		res, err = a.applyOnce(ctx, b, &p, t)
		if errors.Is(err, errTurn) {
			a.metrics.turnWaits.Inc()
			if err = t.awaitPrev(ctx); err != nil {
				break
			}
			continue
		}
		if err == nil || attempt >= a.cfg.Retries || !retryable(err) {
			break
		}
		a.metrics.retries.Inc()
		a.log.Debug("apply: retrying", "edge", b.EdgeId, "first_seq", b.FirstSeq, "err", err)
		select {
		case <-ctx.Done():
			return Result{}, ctx.Err()
		case <-time.After(time.Duration(attempt+1) * 10 * time.Millisecond):
		}
	}
	if t != nil && t.prev != nil {
		// A batch is done only once the one before is: the next one,
		// finding the ledger short of its start, tells a gap from a batch
		// before still being applied by whether this one is done.
		if err := wait(ctx, t.prev.done); err != nil {
			return Result{}, err
		}
	}
	res.Duration = time.Since(start)
	if err != nil {
		a.metrics.failures.Inc()
		return Result{}, err
	}
	if p != nil && res.Status == longhaulv1.Ack_APPLIED {
		res.Collapsed = p.dropped
	}
	a.metrics.observe(res)
	return res, nil
}

// AppliedSeq returns the last sequence applied for an edge, 0 when none.
func (a *Applier) AppliedSeq(ctx context.Context, edgeID string) (uint64, error) {
	var seq int64
	if err := a.pool.QueryRow(ctx, sqlAppliedSeq, edgeID).Scan(&seq); err != nil {
		return 0, fmt.Errorf("primary: read ledger of %q: %w", edgeID, err)
	}
	return uint64(seq), nil
}

func (a *Applier) applyOnce(ctx context.Context, b *longhaulv1.Batch, pp **prepared, t *turn) (Result, error) {
	// prev is the batch before while it is being applied: this one then
	// writes its rows first and checks the ledger in its turn, after it.
	prev := t.inFlight()
	if prev != nil {
		// Its lock must be there to wait on. Waiting for it here, holding
		// nothing, keeps every wait that holds rows a lock PostgreSQL sees.
		if err := wait(ctx, prev.held); err != nil {
			return Result{}, err
		}
	}
	if prev != nil && !a.spareConn() {
		// Writing ahead would hold a connection idle while it waits for
		// its turn, one the other streams are short of: after it, alone.
		if err := t.awaitPrev(ctx); err != nil {
			return Result{}, err
		}
		prev = nil
	}
	conn, err := a.pool.Acquire(ctx)
	if err != nil {
		return Result{}, fmt.Errorf("primary: acquire connection: %w", err)
	}
	defer conn.Release()
	if len(b.Insights) >= a.cfg.CopyThreshold {
		// Outside the transaction, so a rollback cannot undo it behind
		// the connection's mark. (Before collapsing duplicates the batch
		// may look larger than it is: an idle staging table costs nothing.)
		if err := ensureStaging(ctx, conn.Conn()); err != nil {
			return Result{}, err
		}
	}
	tx, err := conn.Begin(ctx)
	if err != nil {
		return Result{}, fmt.Errorf("primary: begin: %w", err)
	}
	defer tx.Rollback(ctx) //nolint:errcheck // a no-op after Commit

	var applied int64
	res := Result{Path: PathNone}
	if prev == nil {
		// The turn's lock (for the batch behind) and the ledger's, in one
		// round trip.
		lock := ""
		if t != nil {
			lock = sqlTakeTurn
		}
		if applied, err = a.ledger(ctx, tx, b.EdgeId, lock, t); err != nil {
			return Result{}, err
		}
		res.AppliedSeq = uint64(applied)
		if st, ok := ledgerVerdict(b, applied); !ok {
			res.Status = st
			return res, nil // the deferred rollback releases the ledger row
		}
	} else {
		err := tx.QueryRow(ctx, sqlTakeTurnReadLedger, b.EdgeId, t.key).Scan(&applied)
		t.hold()
		if err != nil {
			return Result{}, fmt.Errorf("primary: take the turn of %q: %w", b.EdgeId, err)
		}
		res.AppliedSeq = uint64(applied)
		if b.LastSeq <= uint64(applied) {
			res.Status = longhaulv1.Ack_DUPLICATE // a replay: not written
			return res, nil
		}
	}

	if *pp == nil {
		p := prepare(b.Insights, b.Tallies)
		*pp = &p
	}
	p := *pp
	w := writer{a: a, tx: tx, batch: b}
	if len(p.rows) > 0 {
		path, err := w.write(ctx, p.rows)
		if err != nil {
			return Result{}, err
		}
		res.Path = path
	}
	if prev != nil {
		// Wait for the batch before to end its transaction, then lock the
		// ledger: one round trip.
		if applied, err = a.ledger(ctx, tx, b.EdgeId, sqlAwaitTurn, prev); err != nil {
			return Result{}, err
		}
		res.AppliedSeq = uint64(applied)
		if st, ok := ledgerVerdict(b, applied); !ok {
			if st == longhaulv1.Ack_OUT_OF_SEQUENCE && !prev.finished() {
				return Result{}, errTurn // it rolled back and is not done: after it, alone
			}
			res.Status, res.Path = st, PathNone
			return res, nil // the rows written are rolled back
		}
	}
	if res.Resolved, err = w.scans(ctx, p.tallies); err != nil {
		return Result{}, err
	}
	if _, err := tx.Exec(ctx, sqlAdvanceLedger, b.EdgeId, int64(b.LastSeq)); err != nil {
		return Result{}, fmt.Errorf("primary: advance ledger: %w", err)
	}
	if err := tx.Commit(ctx); err != nil {
		return Result{}, fmt.Errorf("primary: commit: %w", err)
	}
	res.Status = longhaulv1.Ack_APPLIED
	res.AppliedSeq = b.LastSeq
	res.Rows = len(p.rows) - w.deadLetters
	res.DeadLetters = w.deadLetters
	return res, nil
}

// ledger locks the edge's ledger row and returns its applied sequence. In
// the same round trip, before it, lock (unless empty) takes or awaits the
// advisory lock of t: its own turn (sqlTakeTurn, then t is marked held) or
// the turn of the batch before (sqlAwaitTurn).
func (a *Applier) ledger(ctx context.Context, tx pgx.Tx, edgeID, lock string, t *turn) (int64, error) {
	q := &pgx.Batch{}
	if lock != "" {
		q.Queue(lock, t.key)
	}
	q.Queue(sqlLedger, edgeID)
	br := tx.SendBatch(ctx, q)
	defer br.Close() //nolint:errcheck // its error is the first result's
	if lock != "" {
		_, err := br.Exec()
		if lock == sqlTakeTurn {
			t.hold()
		}
		if err != nil {
			return 0, fmt.Errorf("primary: advisory lock of a turn: %w", err)
		}
	}
	var applied int64
	if err := br.QueryRow().Scan(&applied); err != nil {
		return 0, fmt.Errorf("primary: ledger of %q: %w", edgeID, err)
	}
	return applied, br.Close()
}

// spareConn tells whether the pool has a connection no one holds, or room
// for one more.
func (a *Applier) spareConn() bool {
	st := a.pool.Stat()
	return st.IdleConns() > 0 || st.TotalConns() < st.MaxConns()
}

// ledgerVerdict tells whether b is next after applied; when not, whether
// it is a DUPLICATE or OUT_OF_SEQUENCE.
func ledgerVerdict(b *longhaulv1.Batch, applied int64) (longhaulv1.Ack_Status, bool) {
	switch {
	case b.LastSeq <= uint64(applied):
		return longhaulv1.Ack_DUPLICATE, false
	case b.FirstSeq != uint64(applied)+1:
		return longhaulv1.Ack_OUT_OF_SEQUENCE, false
	}
	return longhaulv1.Ack_APPLIED, true
}

// writer writes the rows of one batch inside its transaction.
type writer struct {
	a           *Applier
	tx          pgx.Tx
	batch       *longhaulv1.Batch
	split       bool // a row was refused: the staging table must be emptied after each merge
	deadLetters int
}

// write writes rows by the path their number calls for. When PostgreSQL
// refuses a row it finds the refused rows by halving (O(bad · log n)
// statements, not one per row), dead-letters them and writes the rest.
func (w *writer) write(ctx context.Context, rows []row) (Path, error) {
	err := w.attempt(ctx, rows)
	if err == nil {
		if len(rows) >= w.a.cfg.CopyThreshold {
			return PathCopy, nil
		}
		return PathUnnest, nil
	}
	if !refused(err) {
		return "", err
	}
	w.split = true
	if err := w.bisect(ctx, rows, err); err != nil {
		return "", err
	}
	return PathSplit, nil
}

func (w *writer) bisect(ctx context.Context, rows []row, cause error) error {
	if len(rows) == 1 {
		return w.deadLetter(ctx, rows[0], cause)
	}
	half := len(rows) / 2
	for _, part := range [][]row{rows[:half], rows[half:]} {
		err := w.attempt(ctx, part)
		if err == nil {
			continue
		}
		if !refused(err) {
			return err
		}
		if err := w.bisect(ctx, part, err); err != nil {
			return err
		}
	}
	return nil
}

// attempt writes rows under a savepoint, so a refusal undoes only them.
func (w *writer) attempt(ctx context.Context, rows []row) error {
	sp, err := w.tx.Begin(ctx)
	if err != nil {
		return fmt.Errorf("primary: savepoint: %w", err)
	}
	if err := w.upsert(ctx, rows); err != nil {
		if rerr := sp.Rollback(ctx); rerr != nil {
			return fmt.Errorf("primary: rollback to savepoint: %w (after %w)", rerr, err)
		}
		return err
	}
	return sp.Commit(ctx)
}

func (w *writer) upsert(ctx context.Context, rows []row) error {
	if len(rows) < w.a.cfg.CopyThreshold {
		c := toColumns(rows)
		_, err := w.tx.Exec(ctx, sqlUnnest, c.account, c.asset, c.kind, c.subject, c.severity, c.details,
			c.scanID, c.checker, c.firstSeen, c.lastSeen, c.hash)
		return err
	}
	if _, err := copyInto(ctx, w.tx.Conn().PgConn(), "pg_temp."+stagingTable, rows); err != nil {
		return err
	}
	if _, err := w.tx.Exec(ctx, sqlMergeStaging); err != nil {
		return err
	}
	if w.split {
		if _, err := w.tx.Exec(ctx, sqlClearStaging); err != nil {
			return err
		}
	}
	return nil
}

const stagingReady = "longhaul.staging"

// ensureStaging creates the connection's staging table the first time the
// connection needs it. The mark lives on the connection, so a new
// connection (after a reconnect) creates its own.
func ensureStaging(ctx context.Context, conn *pgx.Conn) error {
	data := conn.PgConn().CustomData()
	if data[stagingReady] == true {
		return nil
	}
	for _, q := range []string{sqlStagingBuffers, sqlCreateStaging} {
		if _, err := conn.Exec(ctx, q); err != nil {
			return fmt.Errorf("primary: create staging table: %w", err)
		}
	}
	data[stagingReady] = true
	return nil
}

func (w *writer) deadLetter(ctx context.Context, r row, cause error) error {
	payload, err := proto.Marshal(r.In)
	if err != nil {
		// Protobuf refuses strings that are not UTF-8 (such a row cannot
		// arrive over gRPC, only from a caller in this process): keep a
		// quoted text form instead.
		in := r.In
		payload = fmt.Appendf(nil, "account_id:%q asset:%q kind:%q subject:%q severity:%d details:%q observed_at_unix_micros:%d scan_id:%q checker:%q",
			in.AccountId, in.Asset, in.Kind, in.Subject, in.Severity, in.Details, in.ObservedAtUnixMicros, in.ScanId, in.Checker)
	}
	state, reason := "", cause.Error()
	var pgErr *pgconn.PgError
	if errors.As(cause, &pgErr) {
		state, reason = pgErr.Code, pgErr.Message
		if pgErr.Detail != "" {
			reason += ": " + pgErr.Detail
		}
	}
	key := printable(r.In.AccountId + "/" + r.In.Asset + "/" + r.In.Kind + "/" + r.In.Subject)
	if _, err := w.tx.Exec(ctx, sqlDeadLetter, w.batch.EdgeId, int64(w.batch.FirstSeq), int64(w.batch.LastSeq),
		key, state, printable(reason), payload); err != nil {
		return fmt.Errorf("primary: write dead letter: %w", err)
	}
	w.deadLetters++
	w.a.log.Warn("apply: row refused, dead-lettered", "edge", w.batch.EdgeId, "key", key, "sqlstate", state, "reason", reason)
	return nil
}

// printable makes s storable as text: valid UTF-8 without NUL.
func printable(s string) string {
	return strings.ReplaceAll(strings.ToValidUTF8(s, "\uFFFD"), "\x00", "\uFFFD")
}

// refused tells whether PostgreSQL refused the data itself (so the rows
// are to blame, not the connection or the server): data exceptions (22),
// integrity violations (23) and program limits such as an index row too
// large (54).
func refused(err error) bool {
	var pgErr *pgconn.PgError
	if !errors.As(err, &pgErr) {
		return false
	}
	switch pgErr.Code[:2] {
	case "22", "23", "54":
		return true
	}
	return false
}

// retryable tells whether the transaction lost to a concurrent one and can
// simply run again.
func retryable(err error) bool {
	var pgErr *pgconn.PgError
	if !errors.As(err, &pgErr) {
		return false
	}
	return pgErr.Code == "40001" || pgErr.Code == "40P01"
}
