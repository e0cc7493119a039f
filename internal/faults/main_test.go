package faults

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"os/signal"
	"syscall"
	"testing"
	"time"

	"github.com/longhaul/longhaul/internal/pgtest"
	"github.com/longhaul/longhaul/internal/wan"
	"github.com/longhaul/longhaul/primary"
)

// childEnv, when set, makes the test binary run a primary until it is
// killed (see TestMain): its value is the primary's configuration in JSON.
const childEnv = "LONGHAUL_FAULTS_PRIMARY_CHILD"

func TestMain(m *testing.M) {
	if raw := os.Getenv(childEnv); raw != "" {
		os.Exit(runChildPrimary(raw))
	}
	pgtest.Main(m, wan.LeakOptions()...)
}

type childConfig struct {
	DatabaseURL, Listen, HTTPListen string
	CopyThreshold                   int
}

func runChildPrimary(raw string) int {
	var c childConfig
	if err := json.Unmarshal([]byte(raw), &c); err != nil {
		fmt.Fprintln(os.Stderr, "child primary:", err)
		return 2
	}
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, os.Interrupt)
	defer stop()
	svc, err := primary.Start(ctx, primary.Config{DatabaseURL: c.DatabaseURL, Listen: c.Listen, HTTPListen: c.HTTPListen,
		Applier: primary.ApplierConfig{CopyThreshold: c.CopyThreshold}, Logger: logger()})
	if err != nil {
		fmt.Fprintln(os.Stderr, "child primary:", err)
		return 1
	}
	<-ctx.Done()
	if err := svc.Stop(context.Background()); err != nil {
		fmt.Fprintln(os.Stderr, "child primary:", err)
		return 1
	}
	return 0
}

// primaryProcess is a primary running as a child process: the test binary
// again, with childEnv set. It listens on the same addresses every start.
type primaryProcess struct {
	t      *testing.T
	cfg    childConfig
	cmd    *exec.Cmd
	exited chan struct{} // closed once the child has exited and been reaped
}

// start starts the child and waits until it is ready (database reachable,
// schema current); it returns how long that took.
func (p *primaryProcess) start() time.Duration {
	p.t.Helper()
	t0 := time.Now()
	raw, _ := json.Marshal(p.cfg)
	cmd := exec.Command(os.Args[0], "-test.run=^$")
	cmd.Env = append(os.Environ(), childEnv+"="+string(raw))
	cmd.Stderr = os.Stderr
	// Should the test binary die first, the child dies with it.
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		p.t.Fatal(err)
	}
	exited := make(chan struct{})
	go func() { _ = cmd.Wait(); close(exited) }()
	p.cmd, p.exited = cmd, exited
	client := &http.Client{Timeout: 2 * time.Second}
	for {
		resp, err := client.Get("http://" + p.cfg.HTTPListen + "/readyz")
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				client.CloseIdleConnections()
				return time.Since(t0)
			}
		}
		select {
		case <-exited:
			p.t.Fatalf("child primary exited during start: %v", cmd.ProcessState)
		case <-time.After(20 * time.Millisecond):
		}
		if time.Since(t0) > time.Minute {
			p.kill()
			p.t.Fatalf("child primary not ready after a minute: %v", err)
		}
	}
}

// kill sends SIGKILL and waits until the child is gone.
func (p *primaryProcess) kill() {
	if p.cmd == nil {
		return
	}
	_ = p.cmd.Process.Signal(syscall.SIGKILL)
	<-p.exited
	p.cmd = nil
}
