package main

import (
	"errors"
	"io/fs"
	"net"
	"os"
	"regexp"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"
)

// `longhaul dev --duration` runs the whole stack on a throwaway PostgreSQL
// of its own, prints where everything is and the regions' lines, stops,
// and removes its directory. It needs PostgreSQL's server binaries: without
// them it is skipped, except in CI.
func TestDevRunsEndToEnd(t *testing.T) {
	if testing.Short() {
		t.Skip("starts PostgreSQL and runs for seconds")
	}
	code, out, stderr := runCLI("dev", "--duration", "6s", "--base-port", "0", "--every", "1s",
		"--assets", "100", "--big-assets", "1", "--big-insights", "2000", "--interval", "4s",
		"--synthetic-slow", "300ms", "--fast-budget", "150ms", "--drain-timeout", "10s")
	if code != 0 && strings.Contains(stderr, "binaries (initdb, postgres) not found") && os.Getenv("CI") == "" {
		t.Skip("no PostgreSQL server binaries here:", stderr)
	}
	if code != 0 {
		t.Fatalf("exit %d\nstdout:\n%s\nstderr:\n%s", code, out, stderr)
	}
	for _, want := range []string{"region eu", "region us", "edge eu-2", "curl -sS", "grpcurl -cacert", "longhaul.v1.Ingest/Push", "longhaul status --edge", "/ui"} {
		if !strings.Contains(out, want) {
			t.Errorf("the output lacks %q", want)
		}
	}
	for _, region := range []string{"eu", "us"} {
		// A line of the region with scans flowing.
		re := regexp.MustCompile(`(?m)^\d\d:\d\d:\d\d ` + region + ` +scans/s +[1-9][0-9.]* `)
		if !re.MatchString(out) {
			t.Errorf("no line of %s with scans:\n%s", region, out)
		}
	}
	m := regexp.MustCompile(`stopped; removed (\S+)`).FindStringSubmatch(out)
	if m == nil {
		t.Fatalf("no word of the directory's removal:\n%s", out)
	}
	if _, err := os.Stat(m[1]); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("%s is still there: %v", m[1], err)
	}
}

// A port another process holds is named with the flags that move it, before
// anything starts.
func TestDevNamesATakenPort(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	port := strconv.Itoa(ln.Addr().(*net.TCPAddr).Port)
	code, _, stderr := runCLI("dev", "--base-port", "0", "--port", "scheduler="+port)
	if code != 1 || !strings.Contains(stderr, "port "+port+" (scheduler) is taken") ||
		!strings.Contains(stderr, "--base-port") || !strings.Contains(stderr, "--port scheduler=PORT") {
		t.Fatalf("exit %d: %s", code, stderr)
	}
}

func TestDevFlags(t *testing.T) {
	for _, args := range [][]string{
		{"dev", "--port", "nope=1"},
		{"dev", "--port", "eu-1"},
		{"dev", "--port", "eu-1=99999"},
	} {
		if code, _, stderr := runCLI(args...); code != 2 {
			t.Errorf("%v: exit %d, %s", args, code, stderr)
		}
	}
	if code, _, stderr := runCLI("dev", "--base-port", "70000"); code != 1 || !strings.Contains(stderr, "--base-port") {
		t.Errorf("--base-port 70000: exit %d, %s", code, stderr)
	}
	if code, _, stderr := runCLI("dev", "-h"); code != 0 || !strings.Contains(stderr, "checkers-us") || !strings.Contains(stderr, "7610") {
		t.Errorf("-h: exit %d, %s", code, stderr)
	}
}

// A second Ctrl-C forces the exit; after --duration, the first one does.
func TestDevForcedExit(t *testing.T) {
	exited := make(chan int, 1)
	defer func(f func(int)) { forceExit = f }(forceExit)
	forceExit = func(code int) { exited <- code }
	dir := "/tmp/somewhere"
	for _, tc := range []struct {
		name              string
		bySignal, stopped bool
		signals, exitOn   int // exitOn 0: no forced exit
	}{
		{"Ctrl-C twice", true, true, 2, 2},
		{"Ctrl-C twice while starting", false, false, 2, 2},
		{"Ctrl-C once", true, true, 1, 0},
		{"Ctrl-C after --duration", false, true, 1, 1},
	} {
		sigs, stopping, done := make(chan os.Signal), make(chan struct{}), make(chan struct{})
		var by atomic.Bool
		var d atomic.Pointer[string]
		d.Store(&dir)
		by.Store(tc.bySignal)
		if tc.stopped {
			close(stopping)
		}
		var stderr strings.Builder
		finished := make(chan struct{})
		go func() { defer close(finished); watchSignals(sigs, stopping, &by, &d, done, &stderr) }()
		got := 0
		for i := 1; i <= tc.signals; i++ {
			sigs <- os.Interrupt
			select {
			case code := <-exited:
				if code != 130 {
					t.Errorf("%s: exit code %d", tc.name, code)
				}
				got = i
			case <-time.After(100 * time.Millisecond):
			}
			if got != 0 {
				break
			}
		}
		close(done)
		<-finished
		if got != tc.exitOn {
			t.Errorf("%s: forced exit on signal %d, want %d", tc.name, got, tc.exitOn)
		}
		if got != 0 && !strings.Contains(stderr.String(), dir) {
			t.Errorf("%s: %q does not say where the files are", tc.name, stderr.String())
		}
	}
}
