package edge

import (
	"bufio"
	"bytes"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"strings"
	"sync"
	"time"
)

// Tokens file (Access.TokensFile, `longhaul edge --tokens FILE`): one token a
// line,
//
//	TOKEN [NAME] [accounts=ACCOUNT,ACCOUNT,...]
//
// fields separated by spaces or tabs. NAME identifies the client (logs, the
// push rate limit: tokens with the same name share one bucket, so a client
// can hold an old and a new token while they rotate); without it the client
// is "sha256:" and the first 12 hex digits of the token's SHA-256. With
// accounts= the token may write only those accounts. Blank lines are
// skipped, and so is everything from a field that starts with '#'.
//
// A token is at least MinTokenLength characters of A-Z a-z 0-9 - . _ ~ + / =
// (RFC 6750's b64token: what fits an Authorization header as it is), for
// example `head -c 32 /dev/urandom | base64`. A token listed twice is an
// error, naming both lines. The file is read again when it changes (checked
// at most once a second, on use); a version with errors is refused and the
// one before kept.
//
// The edge keeps only the tokens' SHA-256 and compares a presented token's
// hash with every one of them in constant time (crypto/subtle).

// MinTokenLength is the shortest token the tokens file may hold.
const MinTokenLength = 16

// maxTokenName bounds a token's name, which goes into logs and error
// messages.
const maxTokenName = 128

// token is one line of the tokens file.
type token struct {
	hash     [sha256.Size]byte
	name     string
	accounts map[string]bool // nil: any account
	line     int
}

// parseTokens reads a tokens file; errors name the file (name) and line.
func parseTokens(name string, r io.Reader) ([]token, error) {
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 0, 64<<10), 1<<20)
	var (
		out  []token
		errs []error
		seen = map[[sha256.Size]byte]int{}
		n    int
	)
	bad := func(format string, args ...any) {
		errs = append(errs, fmt.Errorf("edge: tokens file %s: line %d: %s", name, n, fmt.Sprintf(format, args...)))
	}
	for sc.Scan() {
		n++
		fields := strings.Fields(sc.Text())
		for i, f := range fields {
			if strings.HasPrefix(f, "#") {
				fields = fields[:i]
				break
			}
		}
		if len(fields) == 0 {
			continue
		}
		raw := fields[0]
		if len(raw) < MinTokenLength {
			bad("the token is %d characters; at least %d are required", len(raw), MinTokenLength)
			continue
		}
		if i := strings.IndexFunc(raw, func(r rune) bool { return !isTokenChar(r) }); i >= 0 {
			bad("the token has a character (at %d) outside A-Z a-z 0-9 - . _ ~ + / =", i+1)
			continue
		}
		t := token{hash: sha256.Sum256([]byte(raw)), line: n}
		rest := fields[1:]
		if len(rest) > 0 && !strings.HasPrefix(rest[0], "accounts=") {
			t.name, rest = rest[0], rest[1:]
			if len(t.name) > maxTokenName {
				bad("the name is %d bytes; at most %d", len(t.name), maxTokenName)
				continue
			}
		}
		if t.name == "" {
			t.name = "sha256:" + hex.EncodeToString(t.hash[:6])
		}
		if len(rest) > 0 {
			list, ok := strings.CutPrefix(rest[0], "accounts=")
			if !ok {
				bad("unexpected %q: want TOKEN [NAME] [accounts=a,b,c]", rest[0])
				continue
			}
			t.accounts = map[string]bool{}
			for _, a := range strings.Split(list, ",") {
				if a == "" {
					bad("accounts= has an empty account (want accounts=a,b,c)")
					t.accounts = nil
					break
				}
				t.accounts[a] = true
			}
			if t.accounts == nil {
				continue
			}
			rest = rest[1:]
		}
		if len(rest) > 0 {
			bad("unexpected %q: want TOKEN [NAME] [accounts=a,b,c]", rest[0])
			continue
		}
		if first, dup := seen[t.hash]; dup {
			bad("the same token as line %d", first)
			continue
		}
		seen[t.hash] = n
		out = append(out, t)
	}
	if err := sc.Err(); err != nil {
		errs = append(errs, fmt.Errorf("edge: tokens file %s: line %d: %w", name, n+1, err))
	}
	if len(errs) == 0 && len(out) == 0 {
		errs = append(errs, fmt.Errorf("edge: tokens file %s: no tokens in it (nobody could push)", name))
	}
	if err := errors.Join(errs...); err != nil {
		return nil, err
	}
	return out, nil
}

func isTokenChar(r rune) bool {
	switch {
	case 'a' <= r && r <= 'z', 'A' <= r && r <= 'Z', '0' <= r && r <= '9':
		return true
	}
	return strings.ContainsRune("-._~+/=", r)
}

// lookup returns the token whose hash is that of presented, or nil. Every
// token is compared, in constant time, whether one matched already or not.
func lookup(tokens []token, presented string) *token {
	h := sha256.Sum256([]byte(presented))
	var found *token
	for i := range tokens {
		if subtle.ConstantTimeCompare(tokens[i].hash[:], h[:]) == 1 {
			found = &tokens[i]
		}
	}
	return found
}

// tokenFile is the tokens file, read again when it changes.
type tokenFile struct {
	path string
	log  *slog.Logger
	now  func() time.Time // tests replace it

	mu      sync.Mutex
	tokens  []token
	stamp   fileStamp // of the version in use
	checked time.Time
	failing bool          // the file changed to a version that cannot be used
	bad     fileStamp     // that version (zero: the file cannot be read)
	reloads func(ok bool) // counts reloads; may be nil
}

// fileStamp tells versions of a file apart.
type fileStamp struct {
	mtime time.Time
	size  int64
}

func stampOf(path string) (fileStamp, error) {
	st, err := os.Stat(path)
	if err != nil {
		return fileStamp{}, err
	}
	return fileStamp{st.ModTime(), st.Size()}, nil
}

// loadTokenFile reads path; an error in it is an error.
func loadTokenFile(path string, log *slog.Logger) (*tokenFile, error) {
	f := &tokenFile{path: path, log: log, now: time.Now}
	stamp, tokens, err := f.read()
	if err != nil {
		return nil, err
	}
	f.tokens, f.stamp, f.checked = tokens, stamp, f.now()
	return f, nil
}

func (f *tokenFile) read() (fileStamp, []token, error) {
	stamp, err := stampOf(f.path)
	if err != nil {
		return fileStamp{}, nil, fmt.Errorf("edge: tokens file: %w", err)
	}
	b, err := os.ReadFile(f.path)
	if err != nil {
		return fileStamp{}, nil, fmt.Errorf("edge: tokens file: %w", err)
	}
	tokens, err := parseTokens(f.path, bytes.NewReader(b))
	return stamp, tokens, err
}

// current returns the tokens, reading the file again (at most once a
// second) when it changed. A version with errors, or a file that cannot
// be read, leaves the tokens as they were, and is logged once.
func (f *tokenFile) current() []token {
	f.mu.Lock()
	defer f.mu.Unlock()
	now := f.now()
	if now.Sub(f.checked) < time.Second {
		return f.tokens
	}
	f.checked = now
	stamp, err := stampOf(f.path)
	if err == nil && (stamp == f.stamp || f.failing && stamp == f.bad) {
		return f.tokens
	}
	stamp, tokens, err := f.read()
	if err != nil {
		if !f.failing || stamp != f.bad {
			f.log.Error("edge: the tokens file changed but cannot be used; keeping the tokens read before", "err", err)
			if f.reloads != nil {
				f.reloads(false)
			}
		}
		f.failing, f.bad = true, stamp
		return f.tokens
	}
	f.tokens, f.stamp, f.failing = tokens, stamp, false
	f.log.Info("edge: tokens file read again", "path", f.path, "tokens", len(tokens))
	if f.reloads != nil {
		f.reloads(true)
	}
	return f.tokens
}

// count is the number of tokens in use.
func (f *tokenFile) count() int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return len(f.tokens)
}
