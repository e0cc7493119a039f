package scheduler

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"

	"github.com/longhaul/longhaul/internal/serve"
	"github.com/longhaul/longhaul/primary/migrate"
)

// handler is the HTTP API: serve's /healthz, /readyz (database, schema,
// Kafka) and /metrics, and the two routes of the scheduler.
func (s *Service) handler() http.Handler {
	mux := serve.Mux(s.cfg.Registry, map[string]serve.Check{
		"database": func(ctx context.Context) error { return s.pool.Ping(ctx) },
		"schema": func(ctx context.Context) error {
			v, err := migrate.Current(ctx, s.pool)
			if err != nil {
				return err
			}
			if v < migrate.Latest() {
				return fmt.Errorf("schema version %d, want %d", v, migrate.Latest())
			}
			return nil
		},
		"kafka": func(ctx context.Context) error { return s.kafka.Ping(ctx) },
	})
	mux.HandleFunc("POST /v1/assets", s.handleAssets)
	mux.HandleFunc("POST /v1/scans", s.handleScans)
	return mux
}

// errorBody is the body of every 4xx and 5xx answer of the API.
type errorBody struct {
	Error string `json:"error"`
	// Field names the bad field as the request spells it
	// ("assets[3].plan"); "body" for the body as a whole.
	Field string `json:"field,omitempty"`
}

func writeJSON(w http.ResponseWriter, code int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(code)
	_ = json.NewEncoder(w).Encode(v)
}

func writeInputError(w http.ResponseWriter, code int, e *InputError) {
	writeJSON(w, code, errorBody{Error: e.Error(), Field: e.Path()})
}

// refuseLarge answers 413 when the request announces a body over limit:
// such a body is refused without being read.
func refuseLarge(w http.ResponseWriter, r *http.Request, limit int64) bool {
	if r.ContentLength > limit {
		writeInputError(w, http.StatusRequestEntityTooLarge,
			fieldError("", "%d bytes, at most %d", r.ContentLength, limit))
		return true
	}
	return false
}

// badBody answers a decoding error: 413 past the limit, 400 otherwise.
func badBody(w http.ResponseWriter, err error, limit int64) {
	var (
		tooLarge *http.MaxBytesError
		input    *InputError
	)
	switch {
	case errors.As(err, &tooLarge):
		writeInputError(w, http.StatusRequestEntityTooLarge, fieldError("", "larger than %d bytes", limit))
	case errors.As(err, &input):
		writeInputError(w, http.StatusBadRequest, input)
	default:
		writeInputError(w, http.StatusBadRequest, fieldError("", "read: %v", err))
	}
}

// registered is the answer to POST /v1/assets.
type registered struct {
	Assets    int `json:"assets"`
	Created   int `json:"created"`
	Updated   int `json:"updated"`
	Unchanged int `json:"unchanged"`
}

// handleAssets registers assets: POST /v1/assets
// {"assets": [{"account_id", "asset", "plan", "checks"}, ...]}. All or
// nothing: 400 naming the first bad item and field, 413 for a body over
// MaxAssetsBody.
func (s *Service) handleAssets(w http.ResponseWriter, r *http.Request) {
	if refuseLarge(w, r, MaxAssetsBody) {
		return
	}
	assets, err := DecodeAssets(http.MaxBytesReader(w, r.Body, MaxAssetsBody))
	if err != nil {
		badBody(w, err, MaxAssetsBody)
		return
	}
	created, updated, err := RegisterAssets(r.Context(), s.pool, assets, s.cfg.Now(), s.cfg.Intervals)
	if err != nil {
		var input *InputError
		if errors.As(err, &input) {
			writeInputError(w, http.StatusBadRequest, input)
			return
		}
		s.log.Error("scheduler: register assets", "assets", len(assets), "err", err)
		writeJSON(w, http.StatusInternalServerError, errorBody{Error: "registering failed; nothing was written"})
		return
	}
	s.metrics.registered.WithLabelValues("created").Add(float64(created))
	s.metrics.registered.WithLabelValues("updated").Add(float64(updated))
	if created > 0 || updated > 0 {
		s.kickRate()
	}
	writeJSON(w, http.StatusOK, registered{Assets: len(assets), Created: created, Updated: updated,
		Unchanged: len(assets) - created - updated})
}

// accepted is the answer to POST /v1/scans: what will be scanned.
type accepted struct {
	RequestID int64  `json:"request_id"`
	AccountID string `json:"account_id"`
	Asset     string `json:"asset,omitempty"`
	Kind      string `json:"kind,omitempty"`
	// Checks is the one check that runs for Kind; empty: every check of
	// each asset.
	Checks []string `json:"checks,omitempty"`
	// Assets is how many assets get a job.
	Assets int64 `json:"assets"`
}

// handleScans records an on-demand scan request: POST /v1/scans
// {"account_id", "asset" (optional), "kind" (optional)}. 202 with what will
// be scanned; 404 naming the field when nothing matches.
func (s *Service) handleScans(w http.ResponseWriter, r *http.Request) {
	if refuseLarge(w, r, MaxScanBody) {
		return
	}
	req, err := DecodeScanRequest(http.MaxBytesReader(w, r.Body, MaxScanBody))
	if err != nil {
		badBody(w, err, MaxScanBody)
		return
	}
	var asset, check, kind *string
	if req.Asset != "" {
		asset = &req.Asset
	}
	if req.Kind != "" {
		c := kindCheck(req.Kind)
		check, kind = &c, &req.Kind
	}
	var (
		known, matching int64
		id              *int64
	)
	if err := s.pool.QueryRow(r.Context(), sqlRecordRequest, req.AccountID, asset, check, kind).Scan(&known, &matching, &id); err != nil {
		s.log.Error("scheduler: record scan request", "err", err)
		writeJSON(w, http.StatusInternalServerError, errorBody{Error: "recording the request failed"})
		return
	}
	switch {
	case known == 0 && asset != nil:
		writeInputError(w, http.StatusNotFound, fieldError("asset", "account %q has no asset %q", req.AccountID, req.Asset))
		return
	case known == 0:
		writeInputError(w, http.StatusNotFound, fieldError("account_id", "no assets registered for account %q", req.AccountID))
		return
	case matching == 0 || id == nil:
		writeInputError(w, http.StatusNotFound, fieldError("kind", "no asset has check %q, which produces %q", *check, req.Kind))
		return
	}
	s.metrics.requests.Inc()
	out := accepted{RequestID: *id, AccountID: req.AccountID, Asset: req.Asset, Kind: req.Kind, Assets: matching}
	if check != nil {
		out.Checks = []string{*check}
	}
	writeJSON(w, http.StatusAccepted, out)
}
