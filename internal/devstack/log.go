package devstack

import (
	"context"
	"errors"
	"log/slog"
	"strings"
	"sync/atomic"
)

// teeHandler sends each record to every handler that is enabled for it: the
// caller's logger (warnings, by default) and the log file in Dir (info).
type teeHandler []slog.Handler

func (t teeHandler) Enabled(ctx context.Context, l slog.Level) bool {
	for _, h := range t {
		if h.Enabled(ctx, l) {
			return true
		}
	}
	return false
}

func (t teeHandler) Handle(ctx context.Context, r slog.Record) error {
	var errs []error
	for _, h := range t {
		if h.Enabled(ctx, r.Level) {
			errs = append(errs, h.Handle(ctx, r.Clone()))
		}
	}
	return errors.Join(errs...)
}

func (t teeHandler) WithAttrs(as []slog.Attr) slog.Handler {
	out := make(teeHandler, len(t))
	for i, h := range t {
		out[i] = h.WithAttrs(as)
	}
	return out
}

func (t teeHandler) WithGroup(name string) slog.Handler {
	out := make(teeHandler, len(t))
	for i, h := range t {
		out[i] = h.WithGroup(name)
	}
	return out
}

// closingFilter drops, once the stack is stopping, the errors of sockets
// the stack closed itself: memberlist logs a gossip round under way at its
// Shutdown as an error ("use of closed network connection"), which says
// nothing to someone who pressed Ctrl-C.
type closingFilter struct {
	slog.Handler
	stopping *atomic.Bool
}

func (f closingFilter) Handle(ctx context.Context, r slog.Record) error {
	if f.stopping.Load() && strings.Contains(r.Message, "use of closed network connection") {
		return nil
	}
	return f.Handler.Handle(ctx, r)
}

func (f closingFilter) WithAttrs(as []slog.Attr) slog.Handler {
	return closingFilter{f.Handler.WithAttrs(as), f.stopping}
}

func (f closingFilter) WithGroup(name string) slog.Handler {
	return closingFilter{f.Handler.WithGroup(name), f.stopping}
}
