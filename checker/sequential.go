package checker

import (
	"context"
	"sync"

	"github.com/twmb/franz-go/pkg/kgo"
)

// runSequential is the seed's first design, kept for comparison
// (Config.Sequential, `longhaul bench pipeline`): each partition's records
// are processed in order, one at a time, the partitions side by side; the
// poll's offsets are committed once all of its records are done. One slow
// job holds up its whole partition, and parallelism never exceeds the
// partition count.
func (c *Checker) runSequential(ctx context.Context) error {
	for {
		fs := c.cl.PollRecords(ctx, c.cfg.MaxInFlight)
		if fs.IsClientClosed() || ctx.Err() != nil {
			c.cl.AllowRebalance()
			break
		}
		var wg sync.WaitGroup
		fs.EachPartition(func(p kgo.FetchTopicPartition) {
			if p.Err != nil {
				c.m.fetchErrors.Inc()
				return
			}
			wg.Go(func() {
				for _, r := range p.Records {
					c.mu.Lock()
					c.stats.Polled++
					c.mu.Unlock()
					if !c.process(c.jobsCtx, r) {
						return
					}
					c.mu.Lock()
					c.stats.Finished++
					c.mu.Unlock()
				}
			})
		})
		wg.Wait()
		if err := c.cl.CommitUncommittedOffsets(context.WithoutCancel(ctx)); err != nil {
			c.m.commitErrors.Inc()
			c.log.Warn("commit", "err", err)
		} else {
			c.mu.Lock()
			c.stats.Commits++
			c.mu.Unlock()
		}
		c.cl.AllowRebalance()
	}
	c.cancelJobs()
	c.cl.Close()
	return nil
}
