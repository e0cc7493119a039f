package checker

import (
	"bufio"
	"context"
	"fmt"
	"math/rand/v2"
	"os"
	"os/exec"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	longhaulv1 "github.com/longhaul/longhaul/api/longhaul/v1"
	"github.com/longhaul/longhaul/checks"
	"github.com/longhaul/longhaul/internal/kafka"
	"github.com/twmb/franz-go/pkg/kgo"
)

// childEnv, when set, makes the test binary run a checker (see TestMain):
// "brokers|file". The checker appends each completed scan id to file, then
// returns, so a job is finished only once its id is on disk.
const childEnv = "LONGHAUL_TEST_CHECKER_CHILD"

// filePusher records completions in a file shared with the test.
type filePusher struct {
	mu sync.Mutex
	f  *os.File
}

func (p *filePusher) Push(context.Context, []*longhaulv1.Insight) error { return nil }
func (p *filePusher) Complete(_ context.Context, c *longhaulv1.ScanCompletion) error {
	p.mu.Lock()
	defer p.mu.Unlock()
	if _, err := p.f.WriteString(c.GetScanId() + "\n"); err != nil {
		return err
	}
	return p.f.Sync()
}

func runChildChecker(arg string) int {
	brokers, file, _ := strings.Cut(arg, "|")
	f, err := os.OpenFile(file, os.O_APPEND|os.O_WRONLY|os.O_CREATE, 0o600)
	if err != nil {
		fmt.Fprintln(os.Stderr, "child checker:", err)
		return 2
	}
	ch := funcCheck{name: "t", run: func(ctx context.Context, tg checks.Target, _ func(checks.Finding)) error {
		select { // 5–40 ms, so kills land mid-batch
		case <-time.After(time.Duration(5+rand.IntN(35)) * time.Millisecond):
			return nil
		case <-ctx.Done():
			return ctx.Err()
		}
	}}
	c, err := New(Config{Brokers: strings.Split(brokers, ","), Group: "killed", Checks: []checks.Check{ch},
		Pusher: &filePusher{f: f}, MaxInFlight: 50, CommitInterval: 20 * time.Millisecond,
		// A killed member stays in the group until its session times out:
		// the shortest the broker allows keeps the test short.
		KafkaOpts: append([]kgo.Opt{kgo.SessionTimeout(6 * time.Second)}, fastGroupOpts...)})
	if err != nil {
		fmt.Fprintln(os.Stderr, "child checker:", err)
		return 1
	}
	if err := c.Run(context.Background()); err != nil { // until killed
		fmt.Fprintln(os.Stderr, "child checker:", err)
		return 1
	}
	return 0
}

// A checker process SIGKILLed mid-batch, again and again, and restarted:
// every job is completed at least once, every committed offset covers only
// completed jobs, and each kill redoes at most the in-flight limit.
func TestKilledCheckerProcessLosesNoJob(t *testing.T) {
	t.Parallel()
	const partitions, jobs, kills, maxInFlight = 4, 1200, 4, 50
	k := startKafka(t, partitions)
	cl := client(t, k)
	file := t.TempDir() + "/completed"
	var all []*longhaulv1.ScanJob
	for i := 0; i < jobs; i++ {
		all = append(all, testJob(i, fmt.Sprintf("asset-%d", i), "t"))
	}
	offsets := map[string][2]int64{} // scan id -> partition, offset
	for _, j := range all {
		r, _ := kafka.JobRecord(kafka.TopicFast, j)
		res := cl.ProduceSync(context.Background(), r)
		if err := res.FirstErr(); err != nil {
			t.Fatal(err)
		}
		offsets[j.GetJobId()+"/t"] = [2]int64{int64(res[0].Record.Partition), res[0].Record.Offset}
	}
	completed := func() (map[string]int, int) {
		b, err := os.ReadFile(file)
		if err != nil && !os.IsNotExist(err) {
			t.Fatal(err)
		}
		seen := map[string]int{}
		lines := 0
		sc := bufio.NewScanner(strings.NewReader(string(b)))
		for sc.Scan() {
			seen[sc.Text()]++
			lines++
		}
		return seen, lines
	}
	start := func() *exec.Cmd {
		cmd := exec.Command(os.Args[0], "-test.run=^$")
		cmd.Env = append(os.Environ(), childEnv+"="+k.Brokers()+"|"+file)
		cmd.Stderr = os.Stderr
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		return cmd
	}
	checkCommits := func() {
		seen, _ := completed()
		for p := int32(0); p < partitions; p++ {
			c := committed(t, cl, "killed", kafka.TopicFast, p)
			for id, po := range offsets {
				if po[0] == int64(p) && po[1] < c && seen[id] == 0 {
					t.Fatalf("partition %d committed at %d, yet %s at offset %d never completed", p, c, id, po[1])
				}
			}
		}
	}
	for i := 0; i < kills; i++ {
		cmd := start()
		// Kill once some new jobs completed since the last start.
		_, before := completed()
		waitFor(t, 60*time.Second, "progress before a kill", func() bool { _, n := completed(); return n >= before+100+rand.IntN(100) })
		if err := cmd.Process.Signal(syscall.SIGKILL); err != nil {
			t.Fatal(err)
		}
		_ = cmd.Wait()
		checkCommits()
	}
	cmd := start()
	defer func() { _ = cmd.Process.Signal(syscall.SIGKILL); _ = cmd.Wait() }()
	waitFor(t, 120*time.Second, "every job completed", func() bool { seen, _ := completed(); return len(seen) == jobs })
	checkCommits()
	_, lines := completed()
	redone := lines - jobs
	if redone > kills*maxInFlight {
		t.Fatalf("%d jobs redone after %d kills, more than %d in flight each", redone, kills, maxInFlight)
	}
	t.Logf("%d jobs, %d kills, %d redone (bound %d)", jobs, kills, redone, kills*maxInFlight)
}
