package scheduler

import (
	"bytes"
	"errors"
	"strings"
	"testing"
)

// inputErrorNamesAField fails t unless err is an *InputError that says where.
func inputErrorNamesAField(t *testing.T, err error) {
	t.Helper()
	var ie *InputError
	if !errors.As(err, &ie) {
		t.Fatalf("error %v (%T) is not an *InputError", err, err)
	}
	if ie.Path() == "" || ie.Reason == "" || !strings.Contains(err.Error(), ie.Path()) {
		t.Fatalf("error %q names no field", err)
	}
}

var assetSeeds = []string{
	`{"assets":[{"account_id":"a","asset":"x.example","plan":"free","checks":["tls","headers"]}]}`,
	`{"assets":[{"account_id":"a","asset":"x","plan":"gold","checks":["tls"]}]}`,
	`{"assets":[{"account_id":"a","asset":"x","plan":"pro","checks":[]}]}`,
	`{"assets":[{"account_id":"a","asset":"x","plan":"pro","checks":["tls","tls"]}]}`,
	`{"assets":[{"account_id":"a","asset":"x\u0000","plan":"pro","checks":["tls"]}]}`,
	`{"assets":[{"account_id":"a","asset":"\ud800","plan":"pro","checks":["tls"]}]}`,
	"{\"assets\":[{\"account_id\":\"a\",\"asset\":\"\xff\",\"plan\":\"pro\",\"checks\":[\"tls\"]}]}",
	`{"assets":[{"account_id":"a","asset":"x","plan":"pro","checks":["tls"]},{"account_id":"a","asset":"x","plan":"pro","checks":["tls"]}]}`,
	`{"assets":[5]}`, `{"assets":null}`, `{"assets":[]}`, `[]`, `{"asset":[]}`, `{"assets":[{"plans":1}]}`,
	`{"assets":[{"account_id":"a","asset":"x","plan":"pro","checks":"tls"}]} x`, ``, `{`,
}

// FuzzDecodeAssets: the POST /v1/assets decoder never panics, and either
// refuses the body naming where, or returns valid, distinct assets.
func FuzzDecodeAssets(f *testing.F) {
	for _, s := range assetSeeds {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, body []byte) {
		assets, err := DecodeAssets(bytes.NewReader(body))
		if err != nil {
			inputErrorNamesAField(t, err)
			return
		}
		if len(assets) == 0 {
			t.Fatal("no error and no assets")
		}
		seen := map[[2]string]bool{}
		for i := range assets {
			if err := assets[i].validate(); err != nil {
				t.Fatalf("assets[%d] accepted but invalid: %v", i, err)
			}
			k := [2]string{assets[i].AccountID, assets[i].Asset}
			if seen[k] {
				t.Fatalf("assets[%d] accepted twice", i)
			}
			seen[k] = true
		}
	})
}

// FuzzDecodeAssetLine: a line of an import is decoded the same way, and an
// error names the line.
func FuzzDecodeAssetLine(f *testing.F) {
	for _, s := range []string{
		`{"account_id":"a","asset":"x.example","plan":"free","checks":["tls"]}`,
		`{"account_id":"a","asset":"x","plan":"free","checks":["tls"]} {}`,
		`{"account_id":"a","asset":"x","plan":"free","checks":["TLS"]}`, `5`, `{"x":1}`,
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, line []byte) {
		a, err := decodeAssetLine(line, 7)
		if err != nil {
			inputErrorNamesAField(t, err)
			if !strings.HasPrefix(err.Error(), "line 7") {
				t.Fatalf("error %q does not name the line", err)
			}
			return
		}
		if err := a.validate(); err != nil {
			t.Fatalf("accepted but invalid: %v", err)
		}
	})
}

// FuzzDecodeScanRequest: the POST /v1/scans decoder never panics, and
// either refuses the body naming the field or returns a valid request.
func FuzzDecodeScanRequest(f *testing.F) {
	for _, s := range []string{
		`{"account_id":"a"}`, `{"account_id":"a","asset":"x","kind":"tls.expiry"}`, `{"account_id":""}`,
		`{"account_id":"a","asset":""}`, `{"account_id":"a","kind":".x"}`, `{"account_id":5}`,
		`{"account_id":"a","extra":1}`, `{"account_id":"a"} []`, `null`, ``,
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, body []byte) {
		req, err := DecodeScanRequest(bytes.NewReader(body))
		if err != nil {
			inputErrorNamesAField(t, err)
			return
		}
		if err := req.validate(); err != nil {
			t.Fatalf("accepted but invalid: %v", err)
		}
		if req.Kind != "" && checkNameReason(kindCheck(req.Kind)) != "" {
			t.Fatalf("kind %q accepted but names no check", req.Kind)
		}
	})
}
