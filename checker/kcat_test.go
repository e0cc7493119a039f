package checker

import (
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"testing"
	"time"

	longhaulv1 "github.com/longhaul/longhaul/api/longhaul/v1"
	"github.com/longhaul/longhaul/checks"
	"github.com/longhaul/longhaul/internal/kafka"
)

// A Kafka client no one here wrote (librdkafka's kcat) produces a job, and a
// checker runs it: the job format and the topics are plain Kafka. Skipped
// where kcat is missing, except in CI (.ci/run installs it).
func TestAJobProducedByKcatIsRun(t *testing.T) {
	t.Parallel()
	kcat, err := exec.LookPath("kcat")
	if err != nil {
		if os.Getenv("CI") != "" {
			t.Fatal("kcat missing in CI: apt-get install -y kcat")
		}
		t.Skip("kcat missing: apt-get install -y kcat")
	}
	k := startKafka(t, 2)
	job := &longhaulv1.ScanJob{JobId: "kcat1", AccountId: "acct", Asset: "kcat.example", Checks: []string{"t"}, Lane: longhaulv1.Lane_FAST}
	value, err := kafka.EncodeJob(job)
	if err != nil {
		t.Fatal(err)
	}
	file := filepath.Join(t.TempDir(), "job.bin")
	if err := os.WriteFile(file, value, 0o600); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	// In producer mode kcat sends each file named as one message.
	out, err := exec.CommandContext(ctx, kcat, "-P", "-b", k.Brokers(), "-t", kafka.TopicFast,
		"-k", string(kafka.JobKey(job)), file).CombinedOutput()
	if err != nil {
		t.Fatalf("kcat: %v\n%s", err, out)
	}

	ran := make(chan checks.Target, 1)
	ch := funcCheck{name: "t", run: func(_ context.Context, tg checks.Target, report func(checks.Finding)) error {
		ran <- tg
		report(checks.Finding{Kind: "t.kcat", Subject: "s", Severity: longhaulv1.Severity_LOW})
		return nil
	}}
	rec := newRecorder()
	runChecker(t, Config{Brokers: k.ListenAddrs(), Checks: []checks.Check{ch}, Pusher: rec, KafkaOpts: fastGroupOpts})
	select {
	case tg := <-ran:
		if tg.Asset != "kcat.example" || tg.ScanID != "kcat1/t" {
			t.Fatalf("ran %+v", tg)
		}
	case <-ctx.Done():
		t.Fatal("the job kcat produced was not run")
	}
	waitFor(t, 10*time.Second, "the scan's completion", func() bool { return rec.completed("kcat1/t") })
}
