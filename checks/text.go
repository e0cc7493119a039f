package checks

import (
	"strings"
	"unicode/utf8"
)

// Bounds on what the tls and headers checks copy from a remote server into
// an insight. The edge refuses subjects over 1024 bytes and details over
// 16 KiB; these keep every finding well inside both.
const (
	maxSubjectBytes = 1000
	maxTextBytes    = 256
	maxListItems    = 32
)

// cleanText returns s as the edge accepts it in any string field: valid
// UTF-8 (invalid bytes become U+FFFD), control characters (NUL included)
// replaced by spaces, at most maxBytes long, cut at a rune boundary.
func cleanText(s string, maxBytes int) string {
	clean := true
	for i := 0; i < len(s); i++ {
		if b := s[i]; b < 0x20 || b == 0x7f {
			clean = false
			break
		}
	}
	if clean && len(s) <= maxBytes && utf8.ValidString(s) {
		return s
	}
	s = strings.ToValidUTF8(s, "\uFFFD")
	s = strings.Map(func(r rune) rune {
		if r < 0x20 || r == 0x7f {
			return ' '
		}
		return r
	}, s)
	if len(s) > maxBytes {
		cut := maxBytes
		for cut > 0 && !utf8.RuneStart(s[cut]) {
			cut--
		}
		s = s[:cut]
	}
	return s
}

// cleanList cleans up to maxListItems strings, for details ([]any, as
// structpb wants).
func cleanList(ss []string) []any {
	out := make([]any, 0, min(len(ss), maxListItems))
	for _, s := range ss {
		if len(out) == maxListItems {
			break
		}
		out = append(out, cleanText(s, maxTextBytes))
	}
	return out
}
