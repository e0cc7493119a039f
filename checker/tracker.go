package checker

// partition tracks the jobs of one assigned partition, from the moment they
// are polled until their offset is committed. Records arrive in offset order;
// a job may finish in any order. The offset to commit is that of the lowest
// job not yet finished (Kafka resumes there), or one past the last job when
// all are finished: a commit never passes an unfinished job.
//
// A partition is only touched under the consumer's mutex.
type partition struct {
	topic string
	id    int32
	// jobs polled and not yet covered by a successful commit, in offset
	// order.
	jobs []*job
	// committed is the offset last committed (or -1).
	committed int64
	// gone is set when the partition was revoked or lost: nothing more is
	// committed for it, and its finished jobs release their slots.
	gone bool
}

func newPartition(topic string, id int32) *partition {
	return &partition{topic: topic, id: id, committed: -1}
}

// add appends a polled job. Offsets must increase; a record at or below one
// already tracked (a re-fetch after a reset) is refused.
func (p *partition) add(j *job) bool {
	if n := len(p.jobs); n > 0 && j.offset <= p.jobs[n-1].offset {
		return false
	}
	if j.offset < p.committed {
		return false
	}
	p.jobs = append(p.jobs, j)
	return true
}

// commitPoint returns the offset to commit and its leader epoch, and false
// when there is nothing new to commit.
func (p *partition) commitPoint() (offset int64, epoch int32, ok bool) {
	if len(p.jobs) == 0 {
		return 0, 0, false
	}
	for _, j := range p.jobs {
		if !j.finished {
			offset, epoch = j.offset, j.epoch
			break
		}
		offset, epoch = j.offset+1, j.epoch
	}
	return offset, epoch, offset > p.committed
}

// committedTo records a successful commit of offset and drops the jobs
// below it, returning how many it dropped (the slots they free).
func (p *partition) committedTo(offset int64) int {
	if offset > p.committed {
		p.committed = offset
	}
	n := 0
	for n < len(p.jobs) && p.jobs[n].offset < p.committed {
		if !p.jobs[n].finished {
			break // cannot happen: commitPoint stops at the first unfinished job
		}
		n++
	}
	p.jobs = p.jobs[n:]
	return n
}

// unfinished returns the jobs still running.
func (p *partition) unfinished() []*job {
	var out []*job
	for _, j := range p.jobs {
		if !j.finished {
			out = append(out, j)
		}
	}
	return out
}
