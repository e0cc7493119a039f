package kafka

import (
	"context"
	"strings"
	"testing"

	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kgo"
	"go.uber.org/goleak"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/durationpb"

	longhaulv1 "github.com/longhaul/longhaul/api/longhaul/v1"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

func validJob() *longhaulv1.ScanJob {
	return &longhaulv1.ScanJob{JobId: "j1", AccountId: "a", Asset: "example.com", Checks: []string{"tls"}, Lane: longhaulv1.Lane_FAST}
}

func TestValidateJobNamesTheField(t *testing.T) {
	for _, tc := range []struct {
		field string
		edit  func(*longhaulv1.ScanJob)
	}{
		{"job_id", func(j *longhaulv1.ScanJob) { j.JobId = "" }},
		{"account_id", func(j *longhaulv1.ScanJob) { j.AccountId = strings.Repeat("x", 2000) }},
		{"asset", func(j *longhaulv1.ScanJob) { j.Asset = "a\x00b" }},
		{"asset", func(j *longhaulv1.ScanJob) { j.Asset = "\xff" }},
		{"checks", func(j *longhaulv1.ScanJob) { j.Checks = nil }},
		{"checks[1]", func(j *longhaulv1.ScanJob) { j.Checks = []string{"tls", ""} }},
		{"lane", func(j *longhaulv1.ScanJob) { j.Lane = 7 }},
		{"attempt", func(j *longhaulv1.ScanJob) { j.Attempt = -1 }},
		{"expected_duration", func(j *longhaulv1.ScanJob) { j.ExpectedDuration = &durationpb.Duration{Seconds: -5} }},
	} {
		j := validJob()
		tc.edit(j)
		err := ValidateJob(j)
		if err == nil || !strings.Contains(err.Error(), tc.field+":") {
			t.Errorf("%s: got %v", tc.field, err)
		}
		if _, err := EncodeJob(j); err == nil {
			t.Errorf("%s: encoded an invalid job", tc.field)
		}
	}
	if err := ValidateJob(validJob()); err != nil {
		t.Fatal(err)
	}
}

func FuzzDecodeJob(f *testing.F) {
	b, _ := EncodeJob(validJob())
	f.Add(b)
	f.Add([]byte{})
	f.Add([]byte("not a job"))
	f.Add(append(b, 0xff))
	f.Fuzz(func(t *testing.T, b []byte) {
		j, err := DecodeJob(b)
		if err != nil {
			if j != nil {
				t.Fatal("a job with an error")
			}
			return
		}
		// What decodes is valid and survives a round trip.
		if err := ValidateJob(j); err != nil {
			t.Fatal(err)
		}
		again, err := EncodeJob(j)
		if err != nil {
			t.Fatal(err)
		}
		j2, err := DecodeJob(again)
		if err != nil || !proto.Equal(j, j2) {
			t.Fatalf("round trip: %v", err)
		}
	})
}

func TestEnsureTopicsCreatesOnlyWhatIsMissing(t *testing.T) {
	e, err := StartEmbedded(1, 3)
	if err != nil {
		t.Fatal(err)
	}
	defer e.Close()
	cl, err := kgo.NewClient(kgo.SeedBrokers(e.ListenAddrs()...))
	if err != nil {
		t.Fatal(err)
	}
	defer cl.Close()
	ctx := context.Background()
	// The seeded topics exist with 3 partitions; asking for 5 leaves them be.
	if err := EnsureTopics(ctx, cl, 5, -1, append(Topics, "extra")...); err != nil {
		t.Fatal(err)
	}
	if err := EnsureTopics(ctx, cl, 5, -1, "extra"); err != nil {
		t.Fatal("second time:", err)
	}
	td, err := kadm.NewClient(cl).ListTopics(ctx, append(Topics, "extra")...)
	if err != nil {
		t.Fatal(err)
	}
	for _, topic := range Topics {
		if n := len(td[topic].Partitions); n != 3 {
			t.Errorf("%s: %d partitions, want the 3 it had", topic, n)
		}
	}
	if n := len(td["extra"].Partitions); n != 5 {
		t.Errorf("extra: %d partitions, want 5", n)
	}
}
