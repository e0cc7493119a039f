package topology

import (
	"bytes"
	"context"
	"log"
	"log/slog"
)

// newLogger is a *log.Logger (what memberlist takes) that writes to l at
// the level of each line's "[DEBUG]", "[INFO]", "[WARN]" or "[ERR]" prefix.
func newLogger(l *slog.Logger) *log.Logger { return log.New(levelWriter{l}, "", 0) }

type levelWriter struct{ l *slog.Logger }

var levels = []struct {
	prefix []byte
	level  slog.Level
}{
	{[]byte("[DEBUG] "), slog.LevelDebug},
	{[]byte("[INFO] "), slog.LevelInfo},
	{[]byte("[WARN] "), slog.LevelWarn},
	{[]byte("[ERR] "), slog.LevelError},
	{[]byte("[ERROR] "), slog.LevelError},
}

func (w levelWriter) Write(p []byte) (int, error) {
	msg, level := bytes.TrimRight(p, "\n"), slog.LevelInfo
	for _, lv := range levels {
		if rest, ok := bytes.CutPrefix(msg, lv.prefix); ok {
			msg, level = rest, lv.level
			break
		}
	}
	w.l.Log(context.Background(), level, string(msg))
	return len(p), nil
}
