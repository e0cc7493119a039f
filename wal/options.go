package wal

import (
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"time"

	"github.com/cockroachdb/pebble/v2/vfs"
)

// Defaults applied by Open to zero fields of Options.
const (
	DefaultQuotaBytes        = 1 << 30 // 1 GiB of live records
	DefaultMaxGroupBytes     = 8 << 20 // 8 MiB per group commit
	DefaultMemTableSize      = 64 << 20
	DefaultCompactAfterBytes = 64 << 20
)

// Options configures a Log. The zero value is usable: every field has a
// default, applied by Open.
type Options struct {
	// FS is the file system the log lives on. Default: vfs.Default, the
	// operating system's.
	FS vfs.FS

	// QuotaBytes bounds the bytes of live (not yet truncated) records, each
	// counted as its payload plus RecordOverhead. An Append that would go
	// beyond it fails with ErrFull and writes nothing; Truncate frees quota.
	// Default: DefaultQuotaBytes.
	QuotaBytes int64

	// Logger receives the log's messages and Pebble's (Pebble's
	// informational messages at Debug level). Default: slog.Default().
	Logger *slog.Logger

	// MaxGroupBytes caps the payload bytes one group commit gathers from
	// waiting Appends, bounding the latency one fsync adds; a single Append
	// larger than it is still committed, alone. Default:
	// DefaultMaxGroupBytes.
	MaxGroupBytes int

	// MemTableSize is Pebble's memtable size. Larger memtables flush less
	// often, and records truncated before their memtable flushes never reach
	// an sstable. Default: DefaultMemTableSize.
	MemTableSize uint64

	// CompactAfterBytes is how many bytes of records Truncate removes before
	// the log compacts the truncated key range in the background, returning
	// the disk space now rather than whenever Pebble would. Negative disables
	// it (Pebble still reclaims the space eventually). Default:
	// DefaultCompactAfterBytes.
	CompactAfterBytes int64

	// noSync commits without fsync. Tests only: it exists so that a test can
	// prove the crash test detects the loss it causes.
	noSync bool
	// now stamps AppendedAt. Default time.Now; tests may override it.
	now func() time.Time
}

func (o Options) withDefaults() Options {
	if o.FS == nil {
		o.FS = vfs.Default
	}
	if o.QuotaBytes == 0 {
		o.QuotaBytes = DefaultQuotaBytes
	}
	if o.Logger == nil {
		o.Logger = slog.Default()
	}
	if o.MaxGroupBytes == 0 {
		o.MaxGroupBytes = DefaultMaxGroupBytes
	}
	if o.MemTableSize == 0 {
		o.MemTableSize = DefaultMemTableSize
	}
	if o.CompactAfterBytes == 0 {
		o.CompactAfterBytes = DefaultCompactAfterBytes
	}
	if o.now == nil {
		o.now = time.Now
	}
	return o
}

// validate checks options after withDefaults.
func (o Options) validate() error {
	var errs []error
	if o.QuotaBytes < 0 {
		errs = append(errs, fmt.Errorf("QuotaBytes %d is negative", o.QuotaBytes))
	}
	if o.MaxGroupBytes < 0 {
		errs = append(errs, fmt.Errorf("MaxGroupBytes %d is negative", o.MaxGroupBytes))
	}
	// Below 1 MiB most group commits would rotate the memtable; Pebble
	// refuses 4 GiB and more.
	if o.MemTableSize < 1<<20 || o.MemTableSize >= 4<<30 {
		errs = append(errs, fmt.Errorf("MemTableSize %d is outside [1 MiB, 4 GiB)", o.MemTableSize))
	}
	if len(errs) > 0 {
		return fmt.Errorf("wal: invalid options: %w", errors.Join(errs...))
	}
	return nil
}

// pebbleLogger routes Pebble's messages to slog. Pebble calls Fatalf when it
// cannot go on (it exits the process by default); this logger panics
// instead, so that a fatal error on the commit path can be recovered by the
// committer and turned into the log's sticky failure. Elsewhere the panic
// ends the process, as Pebble intends.
type pebbleLogger struct{ l *slog.Logger }

// pebbleFatal is the panic value of pebbleLogger.Fatalf.
type pebbleFatal string

func (p pebbleLogger) Infof(format string, args ...any) {
	p.l.Debug(strings.TrimSpace(fmt.Sprintf(format, args...)), "component", "pebble")
}

func (p pebbleLogger) Errorf(format string, args ...any) {
	p.l.Error(strings.TrimSpace(fmt.Sprintf(format, args...)), "component", "pebble")
}

func (p pebbleLogger) Fatalf(format string, args ...any) {
	msg := strings.TrimSpace(fmt.Sprintf(format, args...))
	p.l.Error(msg, "component", "pebble", "fatal", true)
	panic(pebbleFatal(msg))
}
