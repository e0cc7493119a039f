package edge

import (
	"fmt"
	"math"
	"strconv"
	"strings"
	"sync"
	"unicode/utf16"
	"unicode/utf8"
)

// Insight.details_json: details a checker already holds as JSON text. The
// edge neither decodes them into a tree nor encodes them again: one pass
// over the bytes checks them and drops the whitespace between tokens, and
// the rest of the text is stored as it came.
//
// What it checks, beyond RFC 8259's grammar, is what PostgreSQL refuses in
// jsonb (so the WAL never holds a row the primary will dead-letter) or
// would keep only in part:
//
//   - invalid UTF-8, and \u0000 (jsonb: "unsupported Unicode escape
//     sequence"); a raw NUL is a control character, which JSON forbids in
//     strings anyway;
//   - a \uD800-\uDBFF escape not followed by a \uDC00-\uDFFF one, and a
//     \uDC00-\uDFFF escape on its own (jsonb: "invalid input syntax"). The
//     Struct path never meets them: proto strings are UTF-8, which has no
//     surrogates, and protojson refuses them in HTTP bodies;
//   - numbers numeric cannot hold (jsonb: "value overflows numeric
//     format"): see numericHolds;
//   - a key twice in one object, which jsonb would collapse to the last;
//   - nesting deeper than MaxDetailsDepth, and more than MaxDetailsBytes
//     once compact: the same rules as for details.

// compactDetailsJSON returns text, which must be one JSON object, with the
// whitespace between its tokens removed, or why it cannot be stored.
//
// The bytes are a function of text alone: the same text gives the same
// bytes on every edge and every call, which is what the hash tie-break of
// last-writer-wins needs (internal/coalesce.DetailsHash hashes them; the
// primary compares the hashes). They are not the bytes encodeDetails writes
// for a Struct of the same value (keys keep their order, numbers and
// escapes their spelling), so the same details sent once as details and
// once as details_json may hash differently: the tie-break then still picks
// one of the two, the same one everywhere.
func compactDetailsJSON(text string, maxBytes int) ([]byte, string) {
	sc := jsonScanners.Get().(*jsonScanner)
	sc.s, sc.maxBytes = text, maxBytes
	out, r := sc.scan()
	sc.release()
	return out, r
}

// jsonScanners holds scanners between calls, so their scratch space is
// allocated once rather than per insight.
var jsonScanners = sync.Pool{New: func() any { return new(jsonScanner) }}

// jsonScanner checks and compacts one details_json. It is a recursive
// descent parser with one method per production; each method starts at
// the first byte of its production and leaves i just past it.
type jsonScanner struct {
	s        string
	i        int // the next byte of s to look at
	maxBytes int

	// The compact form is buf followed by s[run:i]: whitespace is dropped
	// by copying the bytes before it to buf, so text without any is
	// never copied but once, at the end.
	buf     []byte
	run     int
	dropped int // bytes of whitespace dropped so far

	path []detailsStep // where i is, for reasons
	// keys holds the keys of the objects being scanned, each object's from
	// its own base; an object with more than linearKeys keys also puts
	// them in sets[depth], so that checking for duplicates stays linear.
	keys []string
	sets []map[string]struct{}
	esc  []byte // scratch for a key with escapes
}

// linearKeys is the most keys an object may have before duplicates are
// looked for in a map rather than by comparing with each earlier key.
const linearKeys = 8

// Scratch a pooled scanner keeps, beyond maxPooledDetailsBuf; larger is
// dropped, so one odd request does not pin memory.
const (
	maxPooledDetailsKeys = 1024
	maxPooledKeySet      = 256
)

func (sc *jsonScanner) release() {
	// Drop every reference into the caller's text.
	sc.s = ""
	sc.i, sc.run, sc.dropped = 0, 0, 0
	sc.buf = sc.buf[:0]
	if cap(sc.buf) > maxPooledDetailsBuf {
		sc.buf = nil
	}
	// Past their lengths, path and keys hold nothing: object clears what it
	// pops on its way out.
	clear(sc.path)
	sc.path = sc.path[:0]
	clear(sc.keys)
	sc.keys = sc.keys[:0]
	if cap(sc.keys) > maxPooledDetailsKeys {
		sc.keys = nil
	}
	for d := range sc.sets {
		sc.emptySet(d)
	}
	sc.esc = sc.esc[:0]
	if cap(sc.esc) > maxPooledDetailsBuf {
		sc.esc = nil
	}
	jsonScanners.Put(sc)
}

func (sc *jsonScanner) scan() ([]byte, string) {
	sc.space()
	if sc.i == len(sc.s) {
		return nil, "must be one JSON object, got only whitespace"
	}
	switch c := sc.s[sc.i]; {
	case c == '{':
	case c == '[':
		return nil, "must be one JSON object, got an array"
	case c == '"':
		return nil, "must be one JSON object, got a string"
	case c == '-' || isDigit(c):
		return nil, "must be one JSON object, got a number"
	case c == 't' || c == 'f':
		return nil, "must be one JSON object, got a boolean"
	case c == 'n':
		return nil, "must be one JSON object, got null"
	default:
		return nil, sc.syntax("'{'")
	}
	if r := sc.object(1); r != "" {
		return nil, r
	}
	sc.space()
	if sc.i < len(sc.s) {
		return nil, fmt.Sprintf("must be one JSON object, found %s after it at byte %d", describeByte(sc.s[sc.i]), sc.i)
	}
	n := len(sc.s) - sc.dropped
	if n > sc.maxBytes {
		return nil, fmt.Sprintf("must take at most %d bytes as JSON, got %d", sc.maxBytes, n)
	}
	if sc.dropped == 0 {
		return []byte(sc.s), ""
	}
	out := make([]byte, 0, n)
	out = append(out, sc.buf...)
	return append(out, sc.s[sc.run:]...), ""
}

// space skips whitespace, dropping it from the compact form.
func (sc *jsonScanner) space() {
	i := sc.i
	for i < len(sc.s) && isSpace(sc.s[i]) {
		i++
	}
	if i == sc.i {
		return
	}
	// Past the limit the text is refused whatever follows: buf need not
	// grow any more.
	if sc.i-sc.dropped <= sc.maxBytes {
		sc.buf = append(sc.buf, sc.s[sc.run:sc.i]...)
	}
	sc.dropped += i - sc.i
	sc.run, sc.i = i, i
}

func isSpace(c byte) bool { return c == ' ' || c == '\t' || c == '\n' || c == '\r' }

func isDigit(c byte) bool { return '0' <= c && c <= '9' }

// is tells whether the next byte is c.
func (sc *jsonScanner) is(c byte) bool { return sc.i < len(sc.s) && sc.s[sc.i] == c }

// tooBig stops the scan once the compact form so far is over the limit. It
// is checked before each key and value, which bounds the work done for
// nothing; space bounds the scratch space.
func (sc *jsonScanner) tooBig() string {
	if sc.i-sc.dropped > sc.maxBytes {
		return fmt.Sprintf("must take at most %d bytes as JSON", sc.maxBytes)
	}
	return ""
}

func (sc *jsonScanner) at() string { return jsonPointer(sc.path) }

// syntax says that the scan found something other than want at i.
func (sc *jsonScanner) syntax(want string) string {
	if sc.i >= len(sc.s) {
		return fmt.Sprintf("is not valid JSON: it ends where %s should be (inside %s)", want, sc.at())
	}
	return fmt.Sprintf("is not valid JSON at byte %d (inside %s): expected %s, found %s",
		sc.i, sc.at(), want, describeByte(sc.s[sc.i]))
}

// describeByte names c for a reason without putting input bytes in it.
func describeByte(c byte) string {
	switch {
	case c == '\'':
		return `"'"`
	case c >= 0x20 && c < 0x7f:
		return "'" + string(rune(c)) + "'"
	case c < utf8.RuneSelf:
		return fmt.Sprintf("%U", c)
	}
	return fmt.Sprintf("byte 0x%02x", c)
}

// value scans the value at i, inside a container at depth.
func (sc *jsonScanner) value(depth int) string {
	if r := sc.tooBig(); r != "" {
		return r
	}
	if sc.i >= len(sc.s) {
		return sc.syntax("a value")
	}
	switch c := sc.s[sc.i]; {
	case c == '"':
		_, r := sc.str(false)
		return r
	case c == '{':
		return sc.object(depth + 1)
	case c == '[':
		return sc.array(depth + 1)
	case c == '-' || isDigit(c):
		return sc.number()
	case c == 't':
		return sc.literal("true")
	case c == 'f':
		return sc.literal("false")
	case c == 'n':
		return sc.literal("null")
	}
	return sc.syntax("a value")
}

func (sc *jsonScanner) literal(lit string) string {
	for j := range len(lit) {
		if !sc.is(lit[j]) {
			return sc.syntax("the literal " + lit)
		}
		sc.i++
	}
	return ""
}

func (sc *jsonScanner) object(depth int) string {
	if depth > MaxDetailsDepth {
		return fmt.Sprintf("must not nest deeper than %d levels (at %s)", MaxDetailsDepth, sc.at())
	}
	sc.i++ // {
	sc.space()
	if sc.is('}') {
		sc.i++
		return ""
	}
	base := len(sc.keys)
	var set map[string]struct{}
	for {
		if r := sc.tooBig(); r != "" {
			return r
		}
		if !sc.is('"') {
			return sc.syntax("a key (a string)")
		}
		start := sc.i
		escaped, r := sc.str(true)
		if r != "" {
			return r
		}
		key := sc.s[start+1 : sc.i-1]
		if escaped {
			key = sc.unescape(key)
		}
		if set == nil {
			for _, k := range sc.keys[base:] {
				if k == key {
					return sc.duplicate(key)
				}
			}
			sc.keys = append(sc.keys, key)
			if len(sc.keys)-base > linearKeys {
				set = sc.keySet(depth)
				for _, k := range sc.keys[base:] {
					set[k] = struct{}{}
				}
			}
		} else {
			if _, dup := set[key]; dup {
				return sc.duplicate(key)
			}
			set[key] = struct{}{}
		}
		sc.space()
		if !sc.is(':') {
			return sc.syntax("':' after a key")
		}
		sc.i++
		sc.space()
		sc.path = append(sc.path, detailsStep{key: key, index: -1})
		if r := sc.value(depth); r != "" {
			return r
		}
		sc.path[len(sc.path)-1] = detailsStep{}
		sc.path = sc.path[:len(sc.path)-1]
		sc.space()
		if sc.is(',') {
			sc.i++
			sc.space()
			continue
		}
		if !sc.is('}') {
			return sc.syntax("',' or '}' after a member of an object")
		}
		sc.i++
		clear(sc.keys[base:])
		sc.keys = sc.keys[:base]
		if set != nil {
			sc.emptySet(depth)
		}
		return ""
	}
}

// keySet returns the empty set for the keys of the object open at depth.
func (sc *jsonScanner) keySet(depth int) map[string]struct{} {
	for len(sc.sets) <= depth {
		sc.sets = append(sc.sets, nil)
	}
	if sc.sets[depth] == nil {
		sc.sets[depth] = make(map[string]struct{}, 2*linearKeys)
	}
	return sc.sets[depth]
}

// emptySet empties the set of keys at depth, or drops it when it grew
// past what a pooled scanner keeps.
func (sc *jsonScanner) emptySet(depth int) {
	if len(sc.sets[depth]) > maxPooledKeySet {
		sc.sets[depth] = nil
	} else {
		clear(sc.sets[depth])
	}
}

func (sc *jsonScanner) duplicate(key string) string {
	if len(key) > 60 {
		cut := 60
		for cut > 0 && !utf8.RuneStart(key[cut]) {
			cut--
		}
		key = key[:cut] + "..."
	}
	return fmt.Sprintf("object at %s has the key %s twice (PostgreSQL jsonb would keep only the last)", sc.at(), strconv.Quote(key))
}

func (sc *jsonScanner) array(depth int) string {
	if depth > MaxDetailsDepth {
		return fmt.Sprintf("must not nest deeper than %d levels (at %s)", MaxDetailsDepth, sc.at())
	}
	sc.i++ // [
	sc.space()
	if sc.is(']') {
		sc.i++
		return ""
	}
	for n := 0; ; n++ {
		sc.path = append(sc.path, detailsStep{index: n})
		if r := sc.value(depth); r != "" {
			return r
		}
		sc.path = sc.path[:len(sc.path)-1]
		sc.space()
		if sc.is(',') {
			sc.i++
			sc.space()
			continue
		}
		if !sc.is(']') {
			return sc.syntax("',' or ']' after an element of an array")
		}
		sc.i++
		return ""
	}
}

// strPlain[c] tells whether ASCII byte c stands for itself inside a string.
var strPlain = func() (t [utf8.RuneSelf]bool) {
	for c := 0x20; c < utf8.RuneSelf; c++ {
		t[c] = c != '"' && c != '\\'
	}
	return t
}()

// str scans the string at i, a key's when key is set, and tells whether it
// holds escapes.
func (sc *jsonScanner) str(key bool) (escaped bool, reason string) {
	s, start := sc.s, sc.i
	i := start + 1
	for {
		// Most of details is plain ASCII inside strings: skip it eight
		// bytes at a time, then one at a time up to what is not.
		for ; i+8 <= len(s); i += 8 {
			if !plainASCII8(s[i : i+8]) {
				break
			}
		}
		for i < len(s) && s[i] < utf8.RuneSelf && strPlain[s[i]] {
			i++
		}
		if i >= len(s) {
			return false, sc.unclosed(key, start)
		}
		c := s[i]
		if c >= utf8.RuneSelf {
			r, size := utf8.DecodeRuneInString(s[i:])
			if r == utf8.RuneError && size == 1 {
				return false, sc.badString(key, i, "must be valid UTF-8")
			}
			i += size
			continue
		}
		switch c {
		case '"':
			sc.i = i + 1
			return escaped, ""
		case '\\':
			n, r := sc.escape(key, i)
			if r != "" {
				return false, r
			}
			escaped = true
			i += n
		case 0:
			return false, sc.badString(key, i, "must not contain NUL, which PostgreSQL jsonb refuses")
		default:
			return false, sc.badString(key, i, fmt.Sprintf("is not valid JSON: control character %U must be escaped", c))
		}
	}
}

// plainASCII8 tells whether all eight bytes of b stand for themselves
// inside a string: none is non-ASCII, a control character, '"' or '\\'.
// (haszero and hasless of "Bit Twiddling Hacks", which are exact for
// whether any byte matches.)
func plainASCII8(b string) bool {
	_ = b[7] // one bounds check, and the loads become one
	v := uint64(b[0]) | uint64(b[1])<<8 | uint64(b[2])<<16 | uint64(b[3])<<24 |
		uint64(b[4])<<32 | uint64(b[5])<<40 | uint64(b[6])<<48 | uint64(b[7])<<56
	q, bs := v^('"'*ones8), v^('\\'*ones8)
	// A high bit set in v: not ASCII; in (x-ones)&^x: x has a zero byte,
	// or below 0x20 for (v-0x20*ones)&^v.
	return (v|(v-0x20*ones8)&^v|(q-ones8)&^q|(bs-ones8)&^bs)&highs8 == 0
}

const ones8, highs8 = 0x0101010101010101, 0x8080808080808080

// badString says what is wrong at byte i of the string being scanned.
func (sc *jsonScanner) badString(key bool, i int, problem string) string {
	if key {
		return fmt.Sprintf("a key of the object at %s %s (byte %d)", sc.at(), problem, i)
	}
	return fmt.Sprintf("string at %s %s (byte %d)", sc.at(), problem, i)
}

// unclosed says that the string that starts at byte i has no end.
func (sc *jsonScanner) unclosed(key bool, i int) string {
	sc.i = len(sc.s)
	if key {
		return fmt.Sprintf("a key of the object at %s is not valid JSON: it starts at byte %d and never ends", sc.at(), i)
	}
	return fmt.Sprintf("string at %s is not valid JSON: it starts at byte %d and never ends", sc.at(), i)
}

// escape checks the escape at byte i (a backslash) of the string being
// scanned and returns its length.
func (sc *jsonScanner) escape(key bool, i int) (int, string) {
	s := sc.s
	if i+1 >= len(s) {
		return 1, "" // the string never ends: str says so
	}
	switch s[i+1] {
	case '"', '\\', '/', 'b', 'f', 'n', 'r', 't':
		return 2, ""
	case 'u':
	default:
		return 0, sc.badString(key, i, "is not valid JSON: a backslash followed by "+describeByte(s[i+1])+" is not an escape")
	}
	r, ok := hex4(s, i+2)
	switch {
	case !ok:
		return 0, sc.badString(key, i, "is not valid JSON: \\u must be followed by four hex digits")
	case r == 0:
		return 0, sc.badString(key, i, "must not contain \\u0000, which PostgreSQL jsonb refuses")
	case utf16.IsSurrogate(r):
		if r < 0xdc00 && i+7 < len(s) && s[i+6] == '\\' && s[i+7] == 'u' {
			if lo, ok := hex4(s, i+8); ok && 0xdc00 <= lo && lo < 0xe000 {
				return 12, ""
			}
		}
		return 0, sc.badString(key, i, fmt.Sprintf(
			"must not contain the lone UTF-16 surrogate \\u%s, which PostgreSQL jsonb refuses", strings.ToLower(s[i+2:i+6])))
	}
	return 6, ""
}

// hex4 decodes the four hex digits at s[i:], if there are four.
func hex4(s string, i int) (rune, bool) {
	if i+4 > len(s) {
		return 0, false
	}
	var r rune
	for _, c := range []byte(s[i : i+4]) {
		switch {
		case '0' <= c && c <= '9':
			c -= '0'
		case 'a' <= c && c <= 'f':
			c -= 'a' - 10
		case 'A' <= c && c <= 'F':
			c -= 'A' - 10
		default:
			return 0, false
		}
		r = r<<4 | rune(c)
	}
	return r, true
}

// unescape returns the text of raw, the inside of a string str accepted,
// which holds escapes.
func (sc *jsonScanner) unescape(raw string) string {
	b := sc.esc[:0]
	for i := 0; i < len(raw); {
		c := raw[i]
		if c != '\\' {
			b = append(b, c)
			i++
			continue
		}
		switch raw[i+1] {
		case 'b':
			b = append(b, '\b')
		case 'f':
			b = append(b, '\f')
		case 'n':
			b = append(b, '\n')
		case 'r':
			b = append(b, '\r')
		case 't':
			b = append(b, '\t')
		case 'u':
			r, _ := hex4(raw, i+2)
			if utf16.IsSurrogate(r) {
				lo, _ := hex4(raw, i+8)
				r = utf16.DecodeRune(r, lo)
				i += 6
			}
			b = utf8.AppendRune(b, r)
			i += 6
			continue
		default: // " \ /
			b = append(b, raw[i+1])
		}
		i += 2
	}
	sc.esc = b
	return string(b)
}

// number scans the number at i.
func (sc *jsonScanner) number() string {
	s, start := sc.s, sc.i
	i := start
	if s[i] == '-' {
		i++
	}
	digits := func() int {
		j := i
		for i < len(s) && isDigit(s[i]) {
			i++
		}
		return i - j
	}
	intStart := i
	switch {
	case i < len(s) && s[i] == '0':
		i++
	case digits() == 0:
		sc.i = i
		return sc.syntax("a digit")
	}
	intEnd, fracStart, fracEnd := i, i, i
	if i < len(s) && s[i] == '.' {
		i++
		fracStart = i
		if digits() == 0 {
			sc.i = i
			return sc.syntax("a digit after the decimal point")
		}
		fracEnd = i
	}
	var exp int64
	if i < len(s) && (s[i] == 'e' || s[i] == 'E') {
		i++
		neg := i < len(s) && s[i] == '-'
		if i < len(s) && (s[i] == '-' || s[i] == '+') {
			i++
		}
		if i >= len(s) || !isDigit(s[i]) {
			sc.i = i
			return sc.syntax("a digit in the exponent")
		}
		for ; i < len(s) && isDigit(s[i]); i++ {
			if exp <= math.MaxInt32 { // far enough past numeric's bounds
				exp = exp*10 + int64(s[i]-'0')
			}
		}
		if neg {
			exp = -exp
		}
	}
	sc.i = i
	if !numericHolds(s[intStart:intEnd], s[fracStart:fracEnd], exp) {
		return fmt.Sprintf("number at %s is beyond the range of PostgreSQL's numeric, which jsonb uses "+
			"(at most 131072 digits before the decimal point and 16383 after; byte %d)", sc.at(), start)
	}
	return ""
}

// Bounds of PostgreSQL's numeric (src/backend/utils/adt/numeric.c): the
// display scale is 14 bits, the weight a signed 16-bit count of base-10000
// digits, and an exponent from INT_MAX/2 up is refused before either is
// looked at.
const (
	numericMaxDscale   = 0x3fff
	numericMaxWeight   = math.MaxInt16
	numericMaxExponent = math.MaxInt32/2 - 1
)

// numericHolds tells whether numeric_in, which jsonb uses for numbers,
// accepts the number whose integer digits, fraction digits and exponent are
// given: the digits past the decimal point, exponent applied, must number
// at most 16383, and the first digit that is not 0 must stand for at most
// 10^131071 (base-10000 weight 32767).
func numericHolds(intDigits, fracDigits string, exp int64) bool {
	if exp > numericMaxExponent || exp < -numericMaxExponent {
		return false
	}
	if int64(len(fracDigits))-exp > numericMaxDscale {
		return false
	}
	// The power of ten of the first digit that is not 0. JSON allows a
	// leading 0 only alone, so it is the first digit unless that is 0.
	p := int64(len(intDigits)) - 1 + exp
	if intDigits == "0" {
		j := strings.IndexFunc(fracDigits, func(r rune) bool { return r != '0' })
		if j < 0 {
			return true // zero
		}
		p = -int64(j) - 1 + exp
	}
	return p < (numericMaxWeight+1)*4
}
