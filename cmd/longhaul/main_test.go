package main

import (
	"bytes"
	"context"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
)

func runCLI(args ...string) (int, string, string) {
	var out, errb bytes.Buffer
	code := run(context.Background(), args, &out, &errb)
	return code, out.String(), errb.String()
}

func TestEveryCommandAnswersHelp(t *testing.T) {
	for _, c := range commands {
		if c.name == "version" {
			continue
		}
		if code, _, stderr := runCLI(c.name, "-h"); code != 0 || !strings.Contains(stderr, "usage") && !strings.Contains(stderr, "-") {
			t.Errorf("%s -h: exit %d\n%s", c.name, code, stderr)
		}
	}
	if code, _, stderr := runCLI("nope"); code != 2 || !strings.Contains(stderr, `unknown command "nope"`) {
		t.Errorf("unknown command: exit %d, %q", code, stderr)
	}
	if code, _, stderr := runCLI("edge", "--no-such-flag"); code != 2 || !strings.Contains(stderr, "no-such-flag") {
		t.Errorf("unknown flag: exit %d, %q", code, stderr)
	}
}

func TestProbe(t *testing.T) {
	status := http.StatusOK
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		w.WriteHeader(status)
		w.Write([]byte("db: ok"))
	}))
	defer srv.Close()
	if code, out, stderr := runCLI("probe", srv.URL+"/readyz"); code != 0 || !strings.Contains(out, "200") {
		t.Fatalf("200: exit %d, %q %q", code, out, stderr)
	}
	status = http.StatusServiceUnavailable
	if code, _, stderr := runCLI("probe", srv.URL+"/readyz"); code != 1 || !strings.Contains(stderr, "503") {
		t.Fatalf("503: exit %d, %q", code, stderr)
	}
	if code, _, stderr := runCLI("probe", "127.0.0.1:7301"); code != 1 || !strings.Contains(stderr, "want http://") {
		t.Fatalf("no scheme: exit %d, %q", code, stderr)
	}
	if code, _, _ := runCLI("probe"); code != 2 {
		t.Fatalf("no URL: exit %d", code)
	}
}
