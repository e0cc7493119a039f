package scheduler

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"strings"
	"unicode/utf8"
)

// Limits of outside input. The text limits are those of a Kafka job
// (internal/kafka), so every asset registered makes a valid job.
const (
	MaxTextBytes        = 1024     // account_id, asset, kind
	MaxChecks           = 64       // checks of one asset
	MaxCheckBytes       = 64       // one check name
	MaxAssetsPerRequest = 100_000  // assets of one POST /v1/assets
	MaxAssetsBody       = 32 << 20 // bytes of one POST /v1/assets
	MaxScanBody         = 64 << 10 // bytes of one POST /v1/scans
	MaxImportLine       = 1 << 20  // bytes of one line of an import
)

// Asset is an asset as an account registers it: what to scan, how often
// (the plan), and with which checks.
type Asset struct {
	AccountID string   `json:"account_id"`
	Asset     string   `json:"asset"`
	Plan      Plan     `json:"plan"`
	Checks    []string `json:"checks"`
}

// ScanRequest asks for an on-demand scan: every asset of an account, or one
// asset, and with Kind only the check that produces that kind of insight.
type ScanRequest struct {
	AccountID string `json:"account_id"`
	// Asset is empty for every asset of the account.
	Asset string `json:"asset,omitempty"`
	// Kind is an insight kind such as "tls.expiry"; empty for every check.
	// Only the kind's check (the part before the first '.') runs, and the
	// job carries the kind for the check to narrow its findings.
	Kind string `json:"kind,omitempty"`
}

// kindCheck returns the check that produces an insight kind: a kind is
// "<check>.<rest>", so "tls.expiry" gives "tls" (as checks.KindCheck). It
// returns "" for a kind that does not have that form.
func kindCheck(kind string) string {
	c, rest, ok := strings.Cut(kind, ".")
	if !ok || c == "" || rest == "" {
		return ""
	}
	return c
}

// InputError is outside input refused, naming where: the item of a list
// (Index) or the line of an import (Line), and the field.
type InputError struct {
	// Line is the 1-based line of a JSON-lines import; 0 otherwise.
	Line int
	// Index is the position in the request's assets list; -1 when the error
	// is not about one item.
	Index int
	// Field is the field within the item or body ("plan", "checks[2]"), or
	// "" for the item or body as a whole.
	Field  string
	Reason string
}

// Path names the field the way the request spells it: "assets[3].plan",
// "kind", "line 7: plan".
func (e *InputError) Path() string {
	var b strings.Builder
	switch {
	case e.Line > 0:
		fmt.Fprintf(&b, "line %d", e.Line)
		if e.Field != "" {
			b.WriteString(": " + e.Field)
		}
		return b.String()
	case e.Index >= 0:
		fmt.Fprintf(&b, "assets[%d]", e.Index)
		if e.Field != "" {
			b.WriteString("." + e.Field)
		}
		return b.String()
	case e.Field != "":
		return e.Field
	}
	return "body"
}

func (e *InputError) Error() string { return e.Path() + ": " + e.Reason }

func fieldError(field, format string, args ...any) *InputError {
	return &InputError{Index: -1, Field: field, Reason: fmt.Sprintf(format, args...)}
}

// textReason says what is wrong with a text field, "" if nothing.
func textReason(v string, required bool, maxBytes int) string {
	switch {
	case v == "" && required:
		return "required"
	case len(v) > maxBytes:
		return fmt.Sprintf("%d bytes, at most %d", len(v), maxBytes)
	case !utf8.ValidString(v):
		return "not valid UTF-8"
	case strings.IndexByte(v, 0) >= 0:
		return "contains a NUL byte"
	}
	return ""
}

// checkNameReason says what is wrong with a check name, "" if nothing.
// Check names are lower-case letters, digits, '-' and '_': no '.' (a kind's
// check is the part before its first '.'), no '/' (a scan id is
// "<job_id>/<check>"), no ',' (RegisterAssets joins them with commas).
func checkNameReason(c string) string {
	if c == "" {
		return "required"
	}
	if len(c) > MaxCheckBytes {
		return fmt.Sprintf("%d bytes, at most %d", len(c), MaxCheckBytes)
	}
	for i := 0; i < len(c); i++ {
		b := c[i]
		if !('a' <= b && b <= 'z' || '0' <= b && b <= '9' || (b == '-' || b == '_') && i > 0) {
			return fmt.Sprintf("%q: want lower-case letters, digits, '-' and '_', starting with a letter or digit", c)
		}
	}
	return ""
}

// validate checks an asset; the error's Field names the first bad field
// (the caller sets Index or Line).
func (a *Asset) validate() *InputError {
	if r := textReason(a.AccountID, true, MaxTextBytes); r != "" {
		return &InputError{Field: "account_id", Reason: r}
	}
	if r := textReason(a.Asset, true, MaxTextBytes); r != "" {
		return &InputError{Field: "asset", Reason: r}
	}
	switch {
	case a.Plan == "":
		return &InputError{Field: "plan", Reason: "required"}
	case !a.Plan.valid():
		return &InputError{Field: "plan", Reason: fmt.Sprintf("unknown plan %.64q: want free, pro, business or enterprise", a.Plan)}
	}
	if len(a.Checks) == 0 {
		return &InputError{Field: "checks", Reason: "required: at least one check"}
	}
	if len(a.Checks) > MaxChecks {
		return &InputError{Field: "checks", Reason: fmt.Sprintf("%d checks, at most %d", len(a.Checks), MaxChecks)}
	}
	for i, c := range a.Checks {
		if r := checkNameReason(c); r != "" {
			return &InputError{Field: fmt.Sprintf("checks[%d]", i), Reason: r}
		}
		for j := range i {
			if a.Checks[j] == c {
				return &InputError{Field: fmt.Sprintf("checks[%d]", i), Reason: fmt.Sprintf("duplicate of checks[%d] %q", j, c)}
			}
		}
	}
	return nil
}

// validate checks a scan request, naming the first bad field.
func (r *ScanRequest) validate() *InputError {
	if why := textReason(r.AccountID, true, MaxTextBytes); why != "" {
		return fieldError("account_id", "%s", why)
	}
	if why := textReason(r.Asset, false, MaxTextBytes); why != "" {
		return fieldError("asset", "%s", why)
	}
	if why := textReason(r.Kind, false, MaxTextBytes); why != "" {
		return fieldError("kind", "%s", why)
	}
	if r.Kind != "" {
		c := kindCheck(r.Kind)
		if c == "" {
			return fieldError("kind", "%.64q: want \"<check>.<rest>\", such as \"tls.expiry\"", r.Kind)
		}
		if why := checkNameReason(c); why != "" {
			return fieldError("kind", "its check (the part before the first '.') is not a check name: %s", why)
		}
	}
	return nil
}

// text is a JSON string field. It keeps what was wrong with the value
// instead of failing the decoder, which would not say which field it was
// at; and it checks the raw bytes, because encoding/json quietly turns
// invalid UTF-8 into U+FFFD, which would store what the client did not send.
type text struct {
	s   string
	set bool   // present and not null
	bad string // why the value is refused, "" if it is not
}

var (
	replacementRaw     = []byte("\uFFFD")
	replacementEscaped = []byte(`\ufffd`)
)

func (t *text) UnmarshalJSON(b []byte) error {
	*t = text{}
	if string(b) == "null" {
		return nil
	}
	t.set = true
	if len(b) == 0 || b[0] != '"' {
		t.bad = "want a string"
		return nil
	}
	if !utf8.Valid(b) {
		t.bad = "not valid UTF-8"
		return nil
	}
	if err := json.Unmarshal(b, &t.s); err != nil {
		t.bad = "not a valid JSON string"
		return nil
	}
	// A lone surrogate escape (\ud800) decodes to U+FFFD too.
	if strings.ContainsRune(t.s, utf8.RuneError) && !bytes.Contains(b, replacementRaw) &&
		!bytes.Contains(bytes.ToLower(b), replacementEscaped) {
		t.bad = "not valid UTF-8 (a lone surrogate escape)"
	}
	return nil
}

// texts is a JSON array of strings, with what was wrong kept like text.
type texts struct {
	v       []text
	set     bool
	bad     string // the array as a whole
	badItem int    // 1 + the index of the first bad item; 0: none
}

func (t *texts) UnmarshalJSON(b []byte) error {
	*t = texts{}
	if string(b) == "null" {
		return nil
	}
	t.set = true
	var raw []json.RawMessage
	if err := json.Unmarshal(b, &raw); err != nil {
		t.bad = "want an array of strings"
		return nil
	}
	if len(raw) > MaxChecks {
		t.bad = fmt.Sprintf("%d checks, at most %d", len(raw), MaxChecks)
		return nil
	}
	t.v = make([]text, len(raw))
	for i, r := range raw {
		_ = t.v[i].UnmarshalJSON(r)
		if t.v[i].bad == "" && !t.v[i].set {
			t.v[i].bad = "want a string, not null"
		}
		if t.v[i].bad != "" && t.badItem == 0 {
			t.badItem = i + 1
		}
	}
	return nil
}

// assetJSON is an Asset as decoded, before validation.
type assetJSON struct {
	AccountID text  `json:"account_id"`
	Asset     text  `json:"asset"`
	Plan      text  `json:"plan"`
	Checks    texts `json:"checks"`
}

// asset turns a decoded item into an Asset and validates it; the error's
// Field names the first bad field.
func (j *assetJSON) asset() (Asset, *InputError) {
	for _, f := range []struct {
		name string
		t    *text
	}{{"account_id", &j.AccountID}, {"asset", &j.Asset}, {"plan", &j.Plan}} {
		if f.t.bad != "" {
			return Asset{}, &InputError{Field: f.name, Reason: f.t.bad}
		}
	}
	if j.Checks.bad != "" {
		return Asset{}, &InputError{Field: "checks", Reason: j.Checks.bad}
	}
	if j.Checks.badItem > 0 {
		i := j.Checks.badItem - 1
		return Asset{}, &InputError{Field: fmt.Sprintf("checks[%d]", i), Reason: j.Checks.v[i].bad}
	}
	a := Asset{AccountID: j.AccountID.s, Asset: j.Asset.s, Plan: Plan(j.Plan.s)}
	if len(j.Checks.v) > 0 {
		a.Checks = make([]string, len(j.Checks.v))
		for i, c := range j.Checks.v {
			a.Checks[i] = c.s
		}
	}
	if err := a.validate(); err != nil {
		return Asset{}, err
	}
	return a, nil
}

// jsonError turns a decoding error into an InputError where it is the
// input's fault; read errors (such as *http.MaxBytesError) are returned as
// they are.
func jsonError(err error, item func(*InputError) *InputError) error {
	var (
		syntax  *json.SyntaxError
		typ     *json.UnmarshalTypeError
		invalid *json.InvalidUnmarshalError
	)
	switch {
	case errors.As(err, &syntax):
		return item(&InputError{Reason: fmt.Sprintf("invalid JSON at byte %d: %v", syntax.Offset, syntax)})
	case errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF):
		return item(&InputError{Reason: "empty or truncated JSON"})
	case errors.As(err, &typ):
		if typ.Field == "" {
			return item(&InputError{Reason: "want a JSON object"})
		}
		return item(&InputError{Field: typ.Field, Reason: "want " + jsonType(typ.Type.Kind().String())})
	case errors.As(err, &invalid):
		return err
	}
	if name, ok := strings.CutPrefix(err.Error(), "json: unknown field "); ok {
		name = strings.Trim(name, `"`)
		return item(&InputError{Field: truncate(name, 64), Reason: fmt.Sprintf("unknown field %.64q", name)})
	}
	return err
}

// truncate cuts s to at most n bytes, on a rune boundary when s is UTF-8.
func truncate(s string, n int) string {
	if len(s) <= n {
		return s
	}
	for n > 0 && !utf8.RuneStart(s[n]) {
		n--
	}
	return s[:n]
}

func jsonType(kind string) string {
	switch kind {
	case "string":
		return "a string"
	case "slice":
		return "an array"
	case "struct", "map":
		return "an object"
	}
	return kind
}

// DecodeAssets decodes the body of POST /v1/assets,
// {"assets": [{"account_id", "asset", "plan", "checks": [...]}, ...]}, and
// validates every asset. It reads the body as a stream: an error names the
// first bad item and field (an *InputError), and a body of more than
// MaxAssetsPerRequest assets is refused at the first one too many. Errors of
// r (such as *http.MaxBytesError) are returned as they are.
func DecodeAssets(r io.Reader) ([]Asset, error) {
	dec := json.NewDecoder(r)
	dec.DisallowUnknownFields()
	body := func(e *InputError) *InputError { e.Index = -1; return e }
	wantDelim := func(d json.Delim, field, what string) error {
		tok, err := dec.Token()
		if err != nil {
			return jsonError(err, body)
		}
		if tok != d {
			if tok == nil && field == "assets" {
				return fieldError(field, "required: at least one asset")
			}
			return fieldError(field, "want %s", what)
		}
		return nil
	}
	if err := wantDelim('{', "", `a JSON object {"assets": [...]}`); err != nil {
		return nil, err
	}
	var assets []Asset
	seen := false
	for dec.More() {
		tok, err := dec.Token()
		if err != nil {
			return nil, jsonError(err, body)
		}
		key, _ := tok.(string)
		if key != "assets" {
			return nil, fieldError(truncate(key, 64), "unknown field %.64q", key)
		}
		if seen {
			return nil, fieldError("assets", "given twice")
		}
		seen = true
		if err := wantDelim('[', "assets", "an array of assets"); err != nil {
			return nil, err
		}
		index := map[[2]string]int{}
		for dec.More() {
			i := len(assets)
			if i >= MaxAssetsPerRequest {
				return nil, fieldError("assets", "more than %d assets; send them in several requests", MaxAssetsPerRequest)
			}
			at := func(e *InputError) *InputError { e.Index = i; return e }
			var j assetJSON
			if err := dec.Decode(&j); err != nil {
				return nil, jsonError(err, at)
			}
			a, ierr := j.asset()
			if ierr != nil {
				return nil, at(ierr)
			}
			k := [2]string{a.AccountID, a.Asset}
			if prev, dup := index[k]; dup {
				return nil, at(&InputError{Field: "asset", Reason: fmt.Sprintf("duplicate of assets[%d] (same account_id and asset)", prev)})
			}
			index[k] = i
			assets = append(assets, a)
		}
		if _, err := dec.Token(); err != nil { // ']'
			return nil, jsonError(err, body)
		}
	}
	if _, err := dec.Token(); err != nil { // '}'
		return nil, jsonError(err, body)
	}
	if err := expectEOF(dec); err != nil {
		return nil, err
	}
	if len(assets) == 0 {
		return nil, fieldError("assets", "required: at least one asset")
	}
	return assets, nil
}

// expectEOF fails when anything but white space follows the JSON value.
func expectEOF(dec *json.Decoder) error {
	if _, err := dec.Token(); err != io.EOF {
		var syntax *json.SyntaxError
		if err == nil || errors.As(err, &syntax) || errors.Is(err, io.ErrUnexpectedEOF) {
			return fieldError("", "more after the JSON value")
		}
		return err
	}
	return nil
}

// decodeAssetLine decodes one line of a JSON-lines import.
func decodeAssetLine(b []byte, line int) (Asset, error) {
	dec := json.NewDecoder(bytes.NewReader(b))
	dec.DisallowUnknownFields()
	at := func(e *InputError) *InputError { e.Line = line; e.Index = -1; return e }
	var j assetJSON
	if err := dec.Decode(&j); err != nil {
		return Asset{}, jsonError(err, at)
	}
	if err := expectEOF(dec); err != nil {
		var ie *InputError
		if errors.As(err, &ie) {
			return Asset{}, at(ie)
		}
		return Asset{}, err
	}
	a, ierr := j.asset()
	if ierr != nil {
		return Asset{}, at(ierr)
	}
	return a, nil
}

// scanRequestJSON is a ScanRequest as decoded, before validation.
type scanRequestJSON struct {
	AccountID text `json:"account_id"`
	Asset     text `json:"asset"`
	Kind      text `json:"kind"`
}

// DecodeScanRequest decodes and validates the body of POST /v1/scans,
// {"account_id": …, "asset": … (optional), "kind": … (optional)}. An error
// naming the field is an *InputError; errors of r are returned as they are.
func DecodeScanRequest(r io.Reader) (ScanRequest, error) {
	dec := json.NewDecoder(r)
	dec.DisallowUnknownFields()
	body := func(e *InputError) *InputError { e.Index = -1; return e }
	var j scanRequestJSON
	if err := dec.Decode(&j); err != nil {
		return ScanRequest{}, jsonError(err, body)
	}
	if err := expectEOF(dec); err != nil {
		return ScanRequest{}, err
	}
	for _, f := range []struct {
		name string
		t    *text
	}{{"account_id", &j.AccountID}, {"asset", &j.Asset}, {"kind", &j.Kind}} {
		if f.t.bad != "" {
			return ScanRequest{}, fieldError(f.name, "%s", f.t.bad)
		}
		if f.name != "account_id" && f.t.set && f.t.s == "" {
			return ScanRequest{}, fieldError(f.name, "empty: leave it out instead")
		}
	}
	req := ScanRequest{AccountID: j.AccountID.s, Asset: j.Asset.s, Kind: j.Kind.s}
	if err := req.validate(); err != nil {
		return ScanRequest{}, err
	}
	return req, nil
}
