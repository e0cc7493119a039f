// Package kafka holds what every longhaul role that speaks Kafka shares: the
// topic names, the job codec, topic creation, and the in-process
// Kafka-protocol cluster (franz-go's kfake) used by `longhaul dev` and the
// tests.
package kafka

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"unicode/utf8"

	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kfake"
	"github.com/twmb/franz-go/pkg/kgo"
	"google.golang.org/protobuf/proto"

	longhaulv1 "github.com/longhaul/longhaul/api/longhaul/v1"
)

// Topic names. The fast and slow lanes carry ScanJob messages keyed by
// "account_id/asset"; the dead-letter topic carries the jobs that failed
// repeatedly, with their last error.
const (
	TopicFast = "longhaul.scans.fast"
	TopicSlow = "longhaul.scans.slow"
	TopicDead = "longhaul.scans.dead"
)

// Topics lists every topic longhaul uses.
var Topics = []string{TopicFast, TopicSlow, TopicDead}

// LaneTopic returns the topic of a lane.
func LaneTopic(l longhaulv1.Lane) string {
	if l == longhaulv1.Lane_SLOW {
		return TopicSlow
	}
	return TopicFast
}

// ParseLane parses "fast" or "slow".
func ParseLane(s string) (longhaulv1.Lane, error) {
	switch strings.ToLower(s) {
	case "fast":
		return longhaulv1.Lane_FAST, nil
	case "slow":
		return longhaulv1.Lane_SLOW, nil
	}
	return 0, fmt.Errorf("lane %q: want fast or slow", s)
}

// LaneName is the inverse of ParseLane.
func LaneName(l longhaulv1.Lane) string {
	if l == longhaulv1.Lane_SLOW {
		return "slow"
	}
	return "fast"
}

// Limits of a job message; a message beyond them is not a job.
const (
	MaxJobBytes  = 64 << 10
	maxField     = 1024
	maxChecks    = 64
	maxLastError = 8 << 10
)

// JobKey is the record key of a job: jobs of one asset share a partition.
func JobKey(j *longhaulv1.ScanJob) []byte { return []byte(j.GetAccountId() + "/" + j.GetAsset()) }

// EncodeJob returns the record value of a job.
func EncodeJob(j *longhaulv1.ScanJob) ([]byte, error) {
	if err := ValidateJob(j); err != nil {
		return nil, err
	}
	return proto.Marshal(j)
}

// JobRecord returns a record carrying j on topic.
func JobRecord(topic string, j *longhaulv1.ScanJob) (*kgo.Record, error) {
	v, err := EncodeJob(j)
	if err != nil {
		return nil, err
	}
	return &kgo.Record{Topic: topic, Key: JobKey(j), Value: v}, nil
}

// DecodeJob decodes and validates a record value. Kafka topics are outside
// input: anyone with access can produce to them.
func DecodeJob(b []byte) (*longhaulv1.ScanJob, error) {
	if len(b) > MaxJobBytes {
		return nil, fmt.Errorf("job: %d bytes, at most %d", len(b), MaxJobBytes)
	}
	j := new(longhaulv1.ScanJob)
	if err := proto.Unmarshal(b, j); err != nil {
		return nil, fmt.Errorf("job: %w", err)
	}
	if err := ValidateJob(j); err != nil {
		return nil, err
	}
	return j, nil
}

// ValidateJob checks a job's fields, naming the first bad one.
func ValidateJob(j *longhaulv1.ScanJob) error {
	str := func(field, v string, required bool, max int) error {
		switch {
		case required && v == "":
			return fmt.Errorf("job: %s: required", field)
		case len(v) > max:
			return fmt.Errorf("job: %s: %d bytes, at most %d", field, len(v), max)
		case !utf8.ValidString(v) || strings.IndexByte(v, 0) >= 0:
			return fmt.Errorf("job: %s: not valid UTF-8 text", field)
		}
		return nil
	}
	if err := str("job_id", j.GetJobId(), true, maxField); err != nil {
		return err
	}
	if err := str("account_id", j.GetAccountId(), true, maxField); err != nil {
		return err
	}
	if err := str("asset", j.GetAsset(), true, maxField); err != nil {
		return err
	}
	if err := str("kind", j.GetKind(), false, maxField); err != nil {
		return err
	}
	if err := str("last_error", j.GetLastError(), false, maxLastError); err != nil {
		return err
	}
	if len(j.GetChecks()) == 0 {
		return errors.New("job: checks: required")
	}
	if len(j.GetChecks()) > maxChecks {
		return fmt.Errorf("job: checks: %d, at most %d", len(j.GetChecks()), maxChecks)
	}
	for i, c := range j.GetChecks() {
		if err := str(fmt.Sprintf("checks[%d]", i), c, true, 64); err != nil {
			return err
		}
	}
	if _, ok := longhaulv1.Lane_name[int32(j.GetLane())]; !ok {
		return fmt.Errorf("job: lane: unknown value %d", j.GetLane())
	}
	if j.GetAttempt() < 0 {
		return fmt.Errorf("job: attempt: %d is negative", j.GetAttempt())
	}
	if d := j.GetExpectedDuration(); d != nil && (d.CheckValid() != nil || d.AsDuration() < 0) {
		return errors.New("job: expected_duration: invalid")
	}
	if t := j.GetScheduledAt(); t != nil && t.CheckValid() != nil {
		return errors.New("job: scheduled_at: invalid")
	}
	if j.GetExpectedInsights() < 0 {
		return errors.New("job: expected_insights: negative")
	}
	return nil
}

// EnsureTopics creates the topics that do not exist yet, with the given
// partitions and replication factor (-1: the broker's default). Topics that
// exist are left as they are.
func EnsureTopics(ctx context.Context, cl *kgo.Client, partitions int32, replication int16, topics ...string) error {
	adm := kadm.NewClient(cl)
	res, err := adm.CreateTopics(ctx, partitions, replication, nil, topics...)
	if err != nil {
		return fmt.Errorf("create topics: %w", err)
	}
	for _, r := range res.Sorted() {
		if r.Err != nil && !errors.Is(r.Err, kerr.TopicAlreadyExists) {
			return fmt.Errorf("create topic %s: %w", r.Topic, r.Err)
		}
	}
	return nil
}

// Embedded is an in-process Kafka-protocol cluster (kfake) with longhaul's
// topics created.
type Embedded struct {
	*kfake.Cluster
}

// StartEmbedded starts a kfake cluster of brokers brokers (at least 1) with
// longhaul's topics of partitions partitions each. opts come last.
func StartEmbedded(brokers, partitions int, opts ...kfake.Opt) (*Embedded, error) {
	if brokers < 1 {
		brokers = 1
	}
	if partitions < 1 {
		partitions = 1
	}
	opts = append([]kfake.Opt{
		kfake.NumBrokers(brokers),
		kfake.DefaultNumPartitions(partitions),
		kfake.SeedTopics(int32(partitions), Topics...),
	}, opts...)
	c, err := kfake.NewCluster(opts...)
	if err != nil {
		return nil, fmt.Errorf("kfake: %w", err)
	}
	return &Embedded{c}, nil
}

// Brokers returns the comma-separated broker list.
func (e *Embedded) Brokers() string { return strings.Join(e.ListenAddrs(), ",") }
