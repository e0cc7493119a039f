package deploy

import (
	"bufio"
	"bytes"
	"encoding/json"
	"os"
	"os/exec"
	"path"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"
)

// instruction is one instruction of a Dockerfile, continuation lines joined.
type instruction struct {
	cmd  string // upper case
	args string
	line int
}

// stage is a build stage: from FROM to the next.
type stage struct {
	image, name string
	body        []instruction
}

func parseDockerfile(t *testing.T) []stage {
	t.Helper()
	f, err := os.Open(filepath.Join(root, "Dockerfile"))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	var (
		stages []stage
		cur    strings.Builder
		start  int
	)
	sc := bufio.NewScanner(f)
	for n := 1; sc.Scan(); n++ {
		line := strings.TrimSpace(sc.Text())
		if cur.Len() == 0 && (line == "" || strings.HasPrefix(line, "#")) {
			continue // comments, parser directives
		}
		if cur.Len() == 0 {
			start = n
		}
		if strings.HasPrefix(line, "#") {
			continue // a comment inside a continued instruction
		}
		if body, ok := strings.CutSuffix(line, `\`); ok {
			cur.WriteString(body + " ")
			continue
		}
		cur.WriteString(line)
		cmd, args, _ := strings.Cut(cur.String(), " ")
		cur.Reset()
		in := instruction{strings.ToUpper(cmd), strings.TrimSpace(args), start}
		if in.cmd == "FROM" {
			f := strings.Fields(in.args)
			st := stage{image: f[len(f)-1]}
			for i, w := range f {
				if strings.HasPrefix(w, "--") {
					continue
				}
				st.image = w
				if i+2 < len(f) && strings.EqualFold(f[i+1], "AS") {
					st.name = f[i+2]
				}
				break
			}
			stages = append(stages, st)
			continue
		}
		if len(stages) == 0 {
			if in.cmd != "ARG" {
				t.Fatalf("Dockerfile:%d: %s before FROM", in.line, in.cmd)
			}
			continue
		}
		stages[len(stages)-1].body = append(stages[len(stages)-1].body, in)
	}
	if err := sc.Err(); err != nil {
		t.Fatal(err)
	}
	return stages
}

// flagsAndWords splits a COPY's arguments into its --flags and the rest.
func flagsAndWords(args string) (map[string]string, []string) {
	flags := map[string]string{}
	var words []string
	for _, w := range strings.Fields(args) {
		if v, ok := strings.CutPrefix(w, "--"); ok && len(words) == 0 {
			k, val, _ := strings.Cut(v, "=")
			flags[k] = val
			continue
		}
		words = append(words, w)
	}
	return flags, words
}

// jsonOrWords parses an instruction's arguments in JSON (exec) form, or as
// words.
func jsonOrWords(args string) []string {
	var out []string
	if json.Unmarshal([]byte(args), &out) == nil {
		return out
	}
	return strings.Fields(args)
}

var goBuildOutput = regexp.MustCompile(`-o\s+(\S+)`)

// TestDockerfile proves that the Dockerfile builds a small image of the one
// binary: a Go stage at go.mod's Go version builds ./cmd/longhaul static
// (CGO_ENABLED=0) with its version stamped through -X main.version (the
// binary this test built the same way says so), and the final stage, from
// distroless static, copies that binary to where the compose file's
// commands and healthchecks run it, runs as a non-root user and declares
// the volume on which the edges' write-ahead logs live.
func TestDockerfile(t *testing.T) {
	t.Parallel()
	stages := parseDockerfile(t)
	if len(stages) < 2 {
		t.Fatalf("Dockerfile: %d stages, want a build stage and a small final one", len(stages))
	}
	goVersion := goDirective(t)
	builder, final := stages[0], stages[len(stages)-1]
	if !strings.HasPrefix(builder.image, "golang:"+goVersion+"-") && builder.image != "golang:"+goVersion {
		t.Errorf("build stage FROM %s: want golang:%s (go.mod says go %s)", builder.image, goVersion, goVersion)
	}
	var out string
	for _, in := range builder.body {
		if in.cmd != "RUN" || !strings.Contains(in.args, "go build") {
			continue
		}
		for _, want := range []string{"CGO_ENABLED=0", "-trimpath", "-X main.version=", "./cmd/longhaul"} {
			if !strings.Contains(in.args, want) {
				t.Errorf("Dockerfile:%d: go build without %s", in.line, want)
			}
		}
		if m := goBuildOutput.FindStringSubmatch(in.args); m != nil {
			out = m[1]
		}
	}
	if out == "" {
		t.Fatal("build stage: no `go build -o <path>`")
	}
	if got, err := exec.Command(longhaul(t), "version").Output(); err != nil || strings.TrimSpace(string(got)) != "longhaul "+testVersion {
		t.Errorf("longhaul built with -X main.version=%s says %q (%v): the Dockerfile's version stamp would not stick", testVersion, got, err)
	}

	if !strings.HasPrefix(final.image, "gcr.io/distroless/static") {
		t.Errorf("final stage FROM %s: want gcr.io/distroless/static (the binary is static; no shell is needed: healthchecks use longhaul probe)", final.image)
	}
	var (
		copied  bool
		user    string
		volumes []string
		command []string
	)
	for _, in := range final.body {
		switch in.cmd {
		case "COPY":
			flags, words := flagsAndWords(in.args)
			from := flags["from"]
			if len(words) == 2 && (from == builder.name || from == "0") && words[0] == out && words[1] == longhaulBinary {
				copied = true
			}
		case "USER":
			user = in.args
		case "VOLUME":
			volumes = append(volumes, jsonOrWords(in.args)...)
		case "ENTRYPOINT":
			t.Errorf("Dockerfile:%d: ENTRYPOINT: the compose file's commands start with longhaul itself", in.line)
		case "CMD":
			command = jsonOrWords(in.args)
		}
	}
	if !copied {
		t.Errorf("final stage: no COPY --from=%s %s %s", builder.name, out, longhaulBinary)
	}
	if u, _, _ := strings.Cut(user, ":"); u == "" || u == "0" || u == "root" {
		t.Errorf("final stage: USER %q, want a non-root user", user)
	}
	if len(command) == 0 || command[0] != "longhaul" {
		t.Errorf("final stage: CMD %q, want longhaul …", command)
	}

	cf := loadCompose(t)
	for _, name := range cf.longhaulServices() {
		for _, m := range cf.Services[name].Volumes {
			if m.Type == "volume" && !slices.Contains(volumes, m.Target) {
				t.Errorf("%s: named volume on %s, which the image does not declare (VOLUME %q): a new volume there would belong to root, not to the image's user", name, m.Target, volumes)
			}
		}
	}
}

// goDirective returns go.mod's go version as major.minor.
func goDirective(t *testing.T) string {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(root, "go.mod"))
	if err != nil {
		t.Fatal(err)
	}
	m := regexp.MustCompile(`(?m)^go (\d+\.\d+)`).FindSubmatch(b)
	if m == nil {
		t.Fatal("go.mod: no go directive")
	}
	return string(m[1])
}

// dockerignore is a .dockerignore as Docker reads it: patterns in order,
// the last one that matches a path (or a directory above it) decides,
// "!" re-includes.
type dockerignore []struct {
	re      *regexp.Regexp
	exclude bool
}

func parseDockerignore(t *testing.T) dockerignore {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(root, ".dockerignore"))
	if err != nil {
		t.Fatal(err)
	}
	var d dockerignore
	for line := range strings.Lines(string(b)) {
		p := strings.TrimSpace(line)
		if p == "" || strings.HasPrefix(p, "#") {
			continue
		}
		exclude := true
		if rest, ok := strings.CutPrefix(p, "!"); ok {
			p, exclude = strings.TrimSpace(rest), false
		}
		p = strings.TrimPrefix(path.Clean(strings.TrimPrefix(p, "/")), "/")
		d = append(d, struct {
			re      *regexp.Regexp
			exclude bool
		}{globRegexp(p), exclude})
	}
	return d
}

// globRegexp translates a .dockerignore pattern: ** any number of
// directories, * and ? within one.
func globRegexp(p string) *regexp.Regexp {
	var b strings.Builder
	b.WriteString("^")
	for i := 0; i < len(p); i++ {
		switch c := p[i]; {
		case strings.HasPrefix(p[i:], "**/"):
			b.WriteString("(.*/)?")
			i += 2
		case strings.HasPrefix(p[i:], "**"):
			b.WriteString(".*")
			i++
		case c == '*':
			b.WriteString("[^/]*")
		case c == '?':
			b.WriteString("[^/]")
		default:
			b.WriteString(regexp.QuoteMeta(string(c)))
		}
	}
	b.WriteString("$")
	return regexp.MustCompile(b.String())
}

// excludes says whether the file at rel (slash-separated, relative to the
// build context) stays out of the context.
func (d dockerignore) excludes(rel string) bool {
	out := false
	for _, p := range d {
		for dir := rel; dir != "."; dir = path.Dir(dir) {
			if p.re.MatchString(dir) {
				out = p.exclude
				break
			}
		}
	}
	return out
}

// TestDockerignore proves that .dockerignore keeps out of the build context
// what the image does not need (the repository's history, binaries, the
// deployment's own files) and nothing that `go build ./cmd/longhaul` reads:
// go.mod, go.sum, and every Go file and embedded file of the module's
// packages it imports, as go list reports them.
func TestDockerignore(t *testing.T) {
	t.Parallel()
	d := parseDockerignore(t)
	for _, rel := range []string{".git/HEAD", "longhaul", "edge.test", "deploy/assets.jsonl", "primary/applier_test.go"} {
		if !d.excludes(rel) {
			t.Errorf(".dockerignore keeps %s in the build context", rel)
		}
	}
	cmd := exec.Command("go", "list", "-deps", "-f",
		`{{if .Module}}{{if .Module.Main}}{{.Dir}}{{range .GoFiles}} {{.}}{{end}}{{range .EmbedFiles}} {{.}}{{end}}{{end}}{{end}}`,
		"github.com/longhaul/longhaul/cmd/longhaul")
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	listed, err := cmd.Output()
	if err != nil {
		t.Fatalf("go list: %v\n%s", err, stderr.String())
	}
	top, err := filepath.Abs(root)
	if err != nil {
		t.Fatal(err)
	}
	needed := []string{"go.mod", "go.sum"}
	for line := range strings.Lines(string(listed)) {
		f := strings.Fields(line)
		if len(f) == 0 {
			continue
		}
		dir, err := filepath.Rel(top, f[0])
		if err != nil {
			t.Fatal(err)
		}
		for _, file := range f[1:] {
			needed = append(needed, filepath.ToSlash(filepath.Join(dir, file)))
		}
	}
	if len(needed) < 10 {
		t.Fatalf("go list found only %q", needed)
	}
	for _, rel := range needed {
		if d.excludes(rel) {
			t.Errorf(".dockerignore excludes %s, which go build ./cmd/longhaul reads", rel)
		}
	}
}

// TestComposeConfig has Docker Compose itself validate the file, where a
// docker CLI with the compose plugin is installed (it needs no engine).
func TestComposeConfig(t *testing.T) {
	t.Parallel()
	if _, err := exec.LookPath("docker"); err != nil {
		t.Skip("no docker CLI here")
	}
	if out, err := exec.Command("docker", "compose", "version").CombinedOutput(); err != nil {
		t.Skipf("docker has no compose plugin here: %v: %s", err, bytes.TrimSpace(out))
	}
	cmd := exec.Command("docker", "compose", "-f", filepath.Join(root, "docker-compose.yml"), "config", "-q")
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Errorf("docker compose config -q: %v\n%s", err, out)
	}
}
