package deploy

import (
	"bytes"
	"fmt"
	"net"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"
)

// testVersion is what the test's build of longhaul says it is, set the way
// the Dockerfile sets the image's: -ldflags -X main.version=….
const testVersion = "deploy-test"

var binary struct {
	once      sync.Once
	dir, path string
	err       error
}

// longhaul builds the binary once for the whole package (the Go build cache
// makes it quick after `go test ./...` compiled its packages) and returns
// its path.
func longhaul(t *testing.T) string {
	t.Helper()
	binary.once.Do(func() {
		binary.dir, binary.err = os.MkdirTemp("", "longhaul-deploy-test-")
		if binary.err != nil {
			return
		}
		binary.path = filepath.Join(binary.dir, "longhaul")
		cmd := exec.Command("go", "build", "-o", binary.path,
			"-ldflags", "-X main.version="+testVersion, "github.com/longhaul/longhaul/cmd/longhaul")
		if out, err := cmd.CombinedOutput(); err != nil {
			binary.err = fmt.Errorf("go build ./cmd/longhaul: %v\n%s", err, out)
		}
	})
	if binary.err != nil {
		t.Fatal(binary.err)
	}
	return binary.path
}

func cleanupBinary() {
	if binary.dir != "" {
		os.RemoveAll(binary.dir)
	}
}

// usage is what `longhaul <command…> -h` says.
type usage struct {
	commands   []string           // subcommands it lists, if any
	flags      map[string]flagDef // by name, without dashes
	positional int                // arguments after the flags
}

type flagDef struct {
	typ string // "" for a boolean flag, else as flag.PrintDefaults names it
	def string // the default it prints, "" if none
}

var (
	flagLine    = regexp.MustCompile(`^  -(\S+)(?: (\S+))?$`)
	commandLine = regexp.MustCompile(`^  ([a-z][a-z0-9-]*)\s{2,}\S`)
	defaultText = regexp.MustCompile(`\(default (.*)\)$`)
	helpCache   sync.Map // command path → *usage or error
)

// help runs `longhaul <path…> -h` once per path and parses its usage.
func help(t *testing.T, path ...string) (*usage, error) {
	t.Helper()
	key := strings.Join(path, " ")
	if v, ok := helpCache.Load(key); ok {
		if err, ok := v.(error); ok {
			return nil, err
		}
		return v.(*usage), nil
	}
	u, err := runHelp(longhaul(t), path)
	if err != nil {
		helpCache.Store(key, err)
		return nil, err
	}
	helpCache.Store(key, u)
	return u, nil
}

func runHelp(bin string, path []string) (*usage, error) {
	var out bytes.Buffer
	cmd := exec.Command(bin, append(slices.Clone(path), "-h")...)
	cmd.Stdout, cmd.Stderr = &out, &out
	err := cmd.Run()
	text := out.String()
	if strings.Contains(text, "unknown command") {
		return nil, fmt.Errorf("longhaul has no command %q:\n%s", strings.Join(path, " "), text)
	}
	if err != nil {
		return nil, fmt.Errorf("longhaul %s -h: %v\n%s", strings.Join(path, " "), err, text)
	}
	u := &usage{flags: map[string]flagDef{}}
	var last string
	for line := range strings.Lines(text) {
		line = strings.TrimRight(line, "\n")
		head, desc, _ := strings.Cut(line, "\t")
		if m := flagLine.FindStringSubmatch(head); m != nil {
			last = m[1]
			u.flags[last] = flagDef{typ: m[2]}
			line = desc
		} else if strings.HasPrefix(line, "    \t") && last != "" {
			line = strings.TrimSpace(line)
		} else {
			last = ""
			if m := commandLine.FindStringSubmatch(line); m != nil {
				u.commands = append(u.commands, m[1])
			}
			if rest, ok := strings.CutPrefix(line, "usage: "); ok {
				if _, after, ok := strings.Cut(rest, "[flags]"); ok {
					u.positional = len(strings.Fields(after))
				}
			}
			continue
		}
		if m := defaultText.FindStringSubmatch(line); m != nil && last != "" {
			d := u.flags[last]
			d.def = m[1]
			if s, err := strconv.Unquote(m[1]); err == nil {
				d.def = s
			}
			u.flags[last] = d
		}
	}
	return u, nil
}

// invocation is a longhaul command line as the binary would parse it.
type invocation struct {
	path     []string // "edge", or "assets", "import"
	flags    []givenFlag
	args     []string // positional
	usage    *usage
	problems []string // what the binary would refuse
}

type givenFlag struct{ name, value string }

// value returns the flag's value: the last one given, or its default.
func (inv *invocation) value(name string) string {
	for _, f := range slices.Backward(inv.flags) {
		if f.name == name {
			return f.value
		}
	}
	return inv.usage.flags[name].def
}

// effective returns every flag the command has with a value, given or
// default, sorted by name.
func (inv *invocation) effective() []givenFlag {
	var out []givenFlag
	for _, name := range keys(inv.usage.flags) {
		if v := inv.value(name); v != "" {
			out = append(out, givenFlag{name, v})
		}
	}
	return out
}

// listens returns the addresses the command listens on: its flags named
// *listen.
func (inv *invocation) listens() []givenFlag {
	var out []givenFlag
	for _, f := range inv.effective() {
		if strings.HasSuffix(f.name, "listen") && portOf(f.value) != "" {
			out = append(out, f)
		}
	}
	return out
}

// dial is an address the command connects to.
type dial struct {
	flag, value string
	host, port  string
	url         *url.URL // when the value is a URL
}

// dialed returns the addresses the command connects to: every value (or
// item of a comma-separated value) of a flag not named *listen that is a
// host:port or a URL with a host, given or default.
func (inv *invocation) dialed() []dial {
	var out []dial
	for _, f := range inv.effective() {
		if strings.HasSuffix(f.name, "listen") || inv.usage.flags[f.name].typ != "string" {
			continue
		}
		for item := range strings.SplitSeq(f.value, ",") {
			item = strings.TrimSpace(item)
			if strings.Contains(item, "://") {
				u, err := url.Parse(item)
				if err != nil || u.Hostname() == "" {
					continue
				}
				p := u.Port()
				if p == "" {
					p = map[string]string{"postgres": "5432", "postgresql": "5432", "http": "80", "https": "443"}[u.Scheme]
				}
				out = append(out, dial{f.name, item, u.Hostname(), p, u})
			} else if h, p, err := net.SplitHostPort(item); err == nil {
				if _, err := strconv.Atoi(p); err == nil {
					out = append(out, dial{f.name, item, h, p, nil})
				}
			}
		}
	}
	return out
}

// invocationOf parses args (a command line without the program) the way
// longhaul would: the command path from the commands each level lists, then
// flags (each must exist, with a value of its type), then the positional
// arguments the usage line names. It returns nil if the command does not
// exist; other problems are in the result's problems.
func invocationOf(t *testing.T, args []string) (*invocation, error) {
	t.Helper()
	inv := &invocation{}
	u, err := help(t)
	if err != nil {
		return nil, err
	}
	i := 0
	for len(u.commands) > 0 {
		if i == len(args) || !slices.Contains(u.commands, args[i]) {
			got := "nothing"
			if i < len(args) {
				got = strconv.Quote(args[i])
			}
			return nil, fmt.Errorf("%s: want one of the commands %v, got %s", strings.Join(append([]string{"longhaul"}, inv.path...), " "), u.commands, got)
		}
		inv.path = append(inv.path, args[i])
		i++
		if u, err = help(t, inv.path...); err != nil {
			return nil, err
		}
	}
	inv.usage = u
	problem := func(format string, a ...any) { inv.problems = append(inv.problems, fmt.Sprintf(format, a...)) }
	seen := map[string]bool{}
	for ; i < len(args); i++ {
		a := args[i]
		if a == "--" {
			i++
			break
		}
		if !strings.HasPrefix(a, "-") || a == "-" {
			break
		}
		name, value, hasValue := strings.Cut(strings.TrimPrefix(strings.TrimPrefix(a, "-"), "-"), "=")
		def, ok := u.flags[name]
		if !ok {
			problem("--%s: longhaul %s has no such flag (it has: %s)", name, strings.Join(inv.path, " "), strings.Join(keys(u.flags), ", "))
			if !hasValue && i+1 < len(args) && !strings.HasPrefix(args[i+1], "-") {
				i++ // most likely its value
			}
			continue
		}
		if seen[name] {
			problem("--%s given twice: the last one wins, which is rarely meant", name)
		}
		seen[name] = true
		if def.typ == "" {
			if !hasValue {
				value = "true"
			}
		} else if !hasValue {
			if i+1 == len(args) {
				problem("--%s: no value", name)
				continue
			}
			i++
			value = args[i]
		}
		if err := checkValue(def.typ, value); err != nil {
			problem("--%s=%s: %v", name, value, err)
		}
		inv.flags = append(inv.flags, givenFlag{name, value})
	}
	inv.args = args[i:]
	if len(inv.args) != u.positional {
		problem("%d arguments after the flags (%q), longhaul %s takes %d", len(inv.args), inv.args, strings.Join(inv.path, " "), u.positional)
	}
	return inv, nil
}

// checkValue says whether value parses as a flag of type typ does.
func checkValue(typ, value string) error {
	var err error
	switch typ {
	case "":
		_, err = strconv.ParseBool(value)
	case "duration":
		_, err = time.ParseDuration(value)
	case "int", "int64":
		_, err = strconv.ParseInt(value, 0, 64)
	case "uint", "uint64":
		_, err = strconv.ParseUint(value, 0, 64)
	case "float":
		_, err = strconv.ParseFloat(value, 64)
	}
	if err != nil {
		return fmt.Errorf("not a %s", cmpOr(typ, "bool"))
	}
	return nil
}

func cmpOr(a, b string) string {
	if a != "" {
		return a
	}
	return b
}

// serviceInvocation returns the parsed command of a longhaul service, or
// nil when it names no command of the binary (TestCommands reports that).
func serviceInvocation(t *testing.T, cf *composeFile, name string) *invocation {
	t.Helper()
	cmd := cf.Services[name].Command
	if len(cmd) == 0 {
		return nil
	}
	inv, err := invocationOf(t, cmd[1:])
	if err != nil {
		return nil
	}
	return inv
}

// TestCommands proves that every longhaul service runs a command the binary
// has, with flags it has (a renamed or removed flag fails here, not in a
// user's `docker compose up`), values of the flags' types and the
// arguments the command takes; that a file it is given is mounted into the
// container; that the deployment has edges in two regions, each with its
// own ledger key (region/node-id), and checkers on both lanes.
func TestCommands(t *testing.T) {
	t.Parallel()
	cf := loadCompose(t)
	var (
		regions = map[string]bool{}
		ledger  = map[string]string{}
		lanes   = map[string]bool{}
	)
	for _, name := range cf.longhaulServices() {
		s := cf.Services[name]
		if len(s.Command) < 2 {
			t.Errorf("%s: command %q: want longhaul <command> [flags]", name, []string(s.Command))
			continue
		}
		if len(s.Entrypoint) > 0 {
			t.Errorf("%s: entrypoint %q: the image has none, commands start with longhaul", name, []string(s.Entrypoint))
		}
		inv, err := invocationOf(t, s.Command[1:])
		if err != nil {
			t.Errorf("%s: %v", name, err)
			continue
		}
		for _, p := range inv.problems {
			t.Errorf("%s: %s", name, p)
		}
		for _, a := range inv.args {
			if !filepath.IsAbs(a) {
				continue
			}
			mounted := false
			for _, m := range s.Volumes {
				mounted = mounted || (m.Type == "bind" && within(a, m.Target))
			}
			if !mounted {
				t.Errorf("%s: reads %s, which no bind mount puts in the container", name, a)
			}
		}
		switch strings.Join(inv.path, " ") {
		case "edge":
			region, node := inv.value("region"), inv.value("node-id")
			regions[region] = true
			key := region + "/" + node
			if other, ok := ledger[key]; ok {
				t.Errorf("%s and %s are both edge %s: the primary's ledger keys on region/node-id", other, name, key)
			}
			ledger[key] = name
		case "checker":
			lanes[inv.value("lane")] = true
		}
	}
	if len(regions) < 2 {
		t.Errorf("edges in regions %v: want two regions at least", keys(regions))
	}
	for _, lane := range []string{"fast", "slow"} {
		if !lanes[lane] {
			t.Errorf("no checker on the %s lane", lane)
		}
	}
}

// TestAddresses proves that what longhaul's services listen on is
// reachable from the other containers (not loopback), and that every
// address they dial, given or left at its default, names a service of the
// compose file on a port that service listens on; a database URL also
// carries the user, password and database PostgreSQL is set up with.
func TestAddresses(t *testing.T) {
	t.Parallel()
	cf := loadCompose(t)
	for _, name := range cf.longhaulServices() {
		inv := serviceInvocation(t, cf, name)
		if inv == nil {
			continue
		}
		for _, f := range inv.flags {
			if !strings.HasSuffix(f.name, "listen") {
				continue
			}
			if h, _, err := net.SplitHostPort(f.value); err == nil && h != "" && h != "0.0.0.0" && h != "::" {
				t.Errorf("%s: --%s=%s: other containers (and published ports) cannot reach it; listen on 0.0.0.0", name, f.name, f.value)
			}
		}
		for _, d := range inv.dialed() {
			target := cf.Services[d.host]
			if ip := net.ParseIP(d.host); d.host == "localhost" || ip != nil && (ip.IsLoopback() || ip.IsUnspecified()) {
				t.Errorf("%s: --%s=%s dials the container itself (is it the flag's default?); name a service", name, d.flag, d.value)
				continue
			}
			if target == nil {
				t.Errorf("%s: --%s dials %s: %q is no service of the compose file", name, d.flag, d.value, d.host)
				continue
			}
			if served := servedPorts(t, cf, d.host); !served[d.port] {
				t.Errorf("%s: --%s dials %s: %s listens on %v, not %s", name, d.flag, d.value, d.host, keys(served), d.port)
			}
			if repo, _, _ := strings.Cut(target.Image, ":"); repo == "apache/kafka" {
				// A client bootstraps there, then goes where the broker
				// advertises that listener.
				ok := false
				for _, addr := range kafkaListeners(target.Environment["KAFKA_ADVERTISED_LISTENERS"]) {
					ok = ok || addr == net.JoinHostPort(d.host, d.port)
				}
				if !ok {
					t.Errorf("%s: --%s dials %s, which Kafka does not advertise: clients would bootstrap, then fail", name, d.flag, d.value)
				}
			}
			if d.url != nil && strings.HasPrefix(d.url.Scheme, "postgres") {
				pass, _ := d.url.User.Password()
				env := target.Environment
				got := [3]string{d.url.User.Username(), pass, strings.TrimPrefix(d.url.Path, "/")}
				want := [3]string{cmpOr(env["POSTGRES_USER"], "postgres"), env["POSTGRES_PASSWORD"], cmpOr(env["POSTGRES_DB"], cmpOr(env["POSTGRES_USER"], "postgres"))}
				if got != want {
					t.Errorf("%s: --%s: user, password, database %q; %s is set up with %q", name, d.flag, got, d.host, want)
				}
			}
		}
	}
}

// TestStopGracePeriods proves that Docker waits longer than longhaul does
// on SIGTERM (--drain-timeout, --abandon-after) before it sends SIGKILL, so
// that a `docker compose stop` drains instead of cutting work off.
func TestStopGracePeriods(t *testing.T) {
	t.Parallel()
	cf := loadCompose(t)
	for _, name := range cf.longhaulServices() {
		inv := serviceInvocation(t, cf, name)
		if inv == nil {
			continue
		}
		grace := 10 * time.Second // Docker's default
		if g := cf.Services[name].StopGracePeriod; g != "" {
			var err error
			if grace, err = time.ParseDuration(g); err != nil {
				t.Errorf("%s: stop_grace_period %q: %v", name, g, err)
				continue
			}
		}
		for _, flag := range []string{"drain-timeout", "abandon-after"} {
			if _, ok := inv.usage.flags[flag]; !ok {
				continue
			}
			d, err := time.ParseDuration(inv.value(flag))
			if err != nil {
				t.Errorf("%s: --%s %q: %v", name, flag, inv.value(flag), err)
				continue
			}
			if grace <= d {
				t.Errorf("%s: stop_grace_period %s is not above --%s %s: Docker kills it mid-drain", name, grace, flag, d)
			}
		}
	}
}
