package deploy

import (
	"fmt"
	"net"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"go.yaml.in/yaml/v3"
)

// root is the repository's root, where docker-compose.yml and the
// Dockerfile live and against which the compose file's relative paths are
// resolved.
const root = ".."

// The longhaul image as the compose file builds it and the Dockerfile lays
// it out.
const (
	longhaulImage  = "longhaul:dev"
	longhaulBinary = "/usr/local/bin/longhaul"
)

// composeFile is the part of a Compose file the tests read.
type composeFile struct {
	Name     string              `yaml:"name"`
	Services map[string]*service `yaml:"services"`
	Volumes  map[string]any      `yaml:"volumes"`
}

type service struct {
	Image           string       `yaml:"image"`
	Build           *build       `yaml:"build"`
	Entrypoint      argv         `yaml:"entrypoint"`
	Command         argv         `yaml:"command"`
	Environment     environment  `yaml:"environment"`
	Volumes         []mount      `yaml:"volumes"`
	Ports           []port       `yaml:"ports"`
	DependsOn       dependencies `yaml:"depends_on"`
	Healthcheck     *healthcheck `yaml:"healthcheck"`
	Restart         string       `yaml:"restart"`
	StopGracePeriod string       `yaml:"stop_grace_period"`
}

// build is a service's build section: "build: ." or a mapping.
type build struct {
	Context    string `yaml:"context"`
	Dockerfile string `yaml:"dockerfile"`
}

func (b *build) UnmarshalYAML(n *yaml.Node) error {
	if n.Kind == yaml.ScalarNode {
		b.Context = n.Value
		return nil
	}
	type plain build
	return n.Decode((*plain)(b))
}

// argv is a command or an entrypoint. Only the exec form (a list) is
// accepted: the longhaul image has no shell to run a string.
type argv []string

func (a *argv) UnmarshalYAML(n *yaml.Node) error {
	if n.Kind != yaml.SequenceNode {
		return fmt.Errorf("line %d: write commands as a list (exec form): the longhaul image has no shell", n.Line)
	}
	return n.Decode((*[]string)(a))
}

// environment is a service's environment, written as a mapping or as a list
// of NAME=value.
type environment map[string]string

func (e *environment) UnmarshalYAML(n *yaml.Node) error {
	*e = environment{}
	if n.Kind == yaml.SequenceNode {
		var items []string
		if err := n.Decode(&items); err != nil {
			return err
		}
		for _, it := range items {
			k, v, _ := strings.Cut(it, "=")
			(*e)[k] = v
		}
		return nil
	}
	return n.Decode((*map[string]string)(e))
}

// mount is one of a service's volumes: "source:target[:mode]" or the long
// syntax.
type mount struct {
	Type     string `yaml:"type"`
	Source   string `yaml:"source"`
	Target   string `yaml:"target"`
	ReadOnly bool   `yaml:"read_only"`
}

func (m *mount) UnmarshalYAML(n *yaml.Node) error {
	if n.Kind == yaml.MappingNode {
		type plain mount
		return n.Decode((*plain)(m))
	}
	parts := strings.Split(n.Value, ":")
	switch len(parts) {
	case 1:
		m.Type, m.Target = "volume", parts[0] // anonymous
		return nil
	case 3:
		m.ReadOnly = slices.Contains(strings.Split(parts[2], ","), "ro")
	case 2:
	default:
		return fmt.Errorf("line %d: volume %q: want source:target[:mode]", n.Line, n.Value)
	}
	m.Source, m.Target = parts[0], parts[1]
	m.Type = "volume"
	if strings.HasPrefix(m.Source, ".") || strings.HasPrefix(m.Source, "/") || strings.HasPrefix(m.Source, "~") {
		m.Type = "bind"
	}
	return nil
}

// port is a published port: "[ip:]host:container[/protocol]" or the long
// syntax.
type port struct {
	HostIP    string `yaml:"host_ip"`
	Published string `yaml:"published"`
	Target    string `yaml:"target"`
	Protocol  string `yaml:"protocol"`
}

func (p *port) UnmarshalYAML(n *yaml.Node) error {
	if n.Kind == yaml.MappingNode {
		type plain port
		return n.Decode((*plain)(p))
	}
	s, proto, _ := strings.Cut(n.Value, "/")
	p.Protocol = proto
	parts := strings.Split(s, ":")
	switch len(parts) {
	case 3:
		p.HostIP, p.Published, p.Target = parts[0], parts[1], parts[2]
	case 2:
		p.Published, p.Target = parts[0], parts[1]
	case 1:
		p.Target = parts[0]
	default:
		return fmt.Errorf("line %d: port %q: want [ip:]host:container", n.Line, n.Value)
	}
	return nil
}

// dependencies is a service's depends_on: a list of services (each
// service_started) or a mapping of service to condition.
type dependencies map[string]string

func (d *dependencies) UnmarshalYAML(n *yaml.Node) error {
	*d = dependencies{}
	if n.Kind == yaml.SequenceNode {
		var names []string
		if err := n.Decode(&names); err != nil {
			return err
		}
		for _, s := range names {
			(*d)[s] = "service_started"
		}
		return nil
	}
	var m map[string]struct {
		Condition string `yaml:"condition"`
	}
	if err := n.Decode(&m); err != nil {
		return err
	}
	for s, c := range m {
		if c.Condition == "" {
			c.Condition = "service_started"
		}
		(*d)[s] = c.Condition
	}
	return nil
}

type healthcheck struct {
	Test        yaml.Node `yaml:"test"`
	Interval    string    `yaml:"interval"`
	Timeout     string    `yaml:"timeout"`
	Retries     int       `yaml:"retries"`
	StartPeriod string    `yaml:"start_period"`
	Disable     bool      `yaml:"disable"`
}

// exec returns the healthcheck's command if it is in exec form,
// ["CMD", program, args…], and false otherwise (a string or CMD-SHELL
// needs a shell in the image).
func (h *healthcheck) exec() ([]string, bool) {
	var test []string
	if h.Test.Kind != yaml.SequenceNode || h.Test.Decode(&test) != nil || len(test) < 2 || test[0] != "CMD" {
		return nil, false
	}
	return test[1:], true
}

// oneShot says whether a service runs to completion rather than for good.
func (s *service) oneShot() bool { return s.Restart == "no" }

// builtHere says whether a service runs the image built from the Dockerfile.
func (s *service) builtHere() bool { return s.Build != nil }

// volumeUnder returns the named volume whose mount holds path, if any.
func (s *service) volumeUnder(path string) (mount, bool) {
	for _, m := range s.Volumes {
		if m.Type == "volume" && m.Source != "" && within(path, m.Target) {
			return m, true
		}
	}
	return mount{}, false
}

// within says whether path is dir or below it.
func within(path, dir string) bool {
	path, dir = filepath.Clean(path), filepath.Clean(dir)
	return path == dir || strings.HasPrefix(path, dir+"/")
}

// compose returns docker-compose.yml, parsed once.
var compose = sync.OnceValues(func() (*composeFile, error) {
	b, err := os.ReadFile(filepath.Join(root, "docker-compose.yml"))
	if err != nil {
		return nil, err
	}
	var cf composeFile
	if err := yaml.Unmarshal(b, &cf); err != nil {
		return nil, fmt.Errorf("docker-compose.yml: %w", err)
	}
	if len(cf.Services) == 0 {
		return nil, fmt.Errorf("docker-compose.yml: no services")
	}
	return &cf, nil
})

func loadCompose(t *testing.T) *composeFile {
	t.Helper()
	cf, err := compose()
	if err != nil {
		t.Fatal(err)
	}
	return cf
}

// names returns the services' names, sorted, so that failures come in a
// stable order.
func (cf *composeFile) names() []string {
	out := make([]string, 0, len(cf.Services))
	for name := range cf.Services {
		out = append(out, name)
	}
	slices.Sort(out)
	return out
}

// longhaulServices returns the services that run the longhaul image.
func (cf *composeFile) longhaulServices() []string {
	var out []string
	for _, name := range cf.names() {
		if cf.Services[name].builtHere() {
			out = append(out, name)
		}
	}
	return out
}

// withImage returns the services whose image is repo (any tag).
func (cf *composeFile) withImage(repo string) []string {
	var out []string
	for _, name := range cf.names() {
		if r, _, _ := strings.Cut(cf.Services[name].Image, ":"); r == repo {
			out = append(out, name)
		}
	}
	return out
}

// dependsOn says whether service a waits for b, directly or through other
// services.
func (cf *composeFile) dependsOn(a, b string) bool {
	seen := map[string]bool{}
	var walk func(s string) bool
	walk = func(s string) bool {
		if seen[s] {
			return false
		}
		seen[s] = true
		svc := cf.Services[s]
		if svc == nil {
			return false
		}
		for d := range svc.DependsOn {
			if d == b || walk(d) {
				return true
			}
		}
		return false
	}
	return walk(a)
}

func TestMain(m *testing.M) {
	code := m.Run()
	cleanupBinary()
	os.Exit(code)
}

// TestServicesAndImages proves that the deployment has every piece the
// design names, each from the image it should run: Kafka from the official
// apache/kafka image, PostgreSQL, toxiproxy at the version the tests run
// in-process, and longhaul's roles from the one image the Dockerfile
// builds. Every image is pinned to a tag.
func TestServicesAndImages(t *testing.T) {
	t.Parallel()
	cf := loadCompose(t)
	for _, name := range []string{
		"postgres", "kafka", "toxiproxy", "toxics", "primary",
		"edge-eu-1", "edge-eu-2", "edge-us-1",
		"assets", "scheduler", "checker-fast", "checker-slow",
	} {
		if cf.Services[name] == nil {
			t.Errorf("no service %q", name)
		}
	}
	if got := cf.withImage("apache/kafka"); len(got) != 1 || got[0] != "kafka" {
		t.Errorf("services with image apache/kafka: %q, want [kafka]", got)
	}
	if s := cf.Services["postgres"]; s != nil && !slices.Contains([]string{"postgres:15", "postgres:16"}, s.Image) {
		t.Errorf("postgres: image %q, want postgres:15 or postgres:16 (the versions the data volume's path and the tests cover)", s.Image)
	}
	if s := cf.Services["toxiproxy"]; s != nil {
		want := "ghcr.io/shopify/toxiproxy:" + strings.TrimPrefix(moduleVersion(t, "github.com/Shopify/toxiproxy/v2"), "v")
		if s.Image != want {
			t.Errorf("toxiproxy: image %q, want %q: the version in go.mod, against which TestToxicsScript runs deploy/toxics.sh", s.Image, want)
		}
	}
	for _, name := range cf.names() {
		s := cf.Services[name]
		switch {
		case s.builtHere():
			if s.Image != longhaulImage {
				t.Errorf("%s: image %q, want %q: one image for every role, built once", name, s.Image, longhaulImage)
			}
			if filepath.Clean(s.Build.Context) != "." || (s.Build.Dockerfile != "" && s.Build.Dockerfile != "Dockerfile") {
				t.Errorf("%s: build %+v, want the repository's Dockerfile", name, *s.Build)
			}
		case s.Image == longhaulImage:
			t.Errorf("%s: runs %s without a build section: `docker compose up` would try to pull it", name, longhaulImage)
		case s.Image == "":
			t.Errorf("%s: neither image nor build", name)
		default:
			if _, tag, ok := strings.Cut(s.Image, ":"); !ok || tag == "" || tag == "latest" || strings.Contains(tag, "/") {
				t.Errorf("%s: image %q is not pinned to a tag", name, s.Image)
			}
		}
	}
	for _, name := range cf.longhaulServices() {
		if cmd := cf.Services[name].Command; len(cmd) == 0 || (cmd[0] != "longhaul" && cmd[0] != longhaulBinary) {
			t.Errorf("%s: command %q, want longhaul <command> [flags]", name, []string(cmd))
		}
	}
}

// TestHealthchecks proves that every service says whether it runs for good
// or once (its restart policy), that every one that runs for good says when
// it is ready, in a form its image can run (exec form: the longhaul image
// has no shell), and that every healthcheck of a longhaul service asks that
// service's own /readyz through `longhaul probe`, with a timeout above the
// probe's.
func TestHealthchecks(t *testing.T) {
	t.Parallel()
	cf := loadCompose(t)
	for _, name := range cf.names() {
		s := cf.Services[name]
		if s.Restart == "" {
			// Compose's default, "no", would make it a one-shot here.
			t.Errorf("%s: no restart policy: say unless-stopped (it runs for good) or \"no\" (a one-shot)", name)
		}
		if s.oneShot() {
			continue
		}
		if s.Healthcheck == nil || s.Healthcheck.Disable {
			t.Errorf("%s: runs for good (restart %q) but has no healthcheck", name, s.Restart)
			continue
		}
		h := s.Healthcheck
		if _, ok := h.exec(); !ok {
			t.Errorf("%s: healthcheck test must be [\"CMD\", program, args…]", name)
		}
		for field, d := range map[string]string{"interval": h.Interval, "timeout": h.Timeout} {
			if v, err := time.ParseDuration(d); err != nil || v <= 0 {
				t.Errorf("%s: healthcheck %s %q: want a duration", name, field, d)
			}
		}
		if h.Retries < 1 {
			t.Errorf("%s: healthcheck retries %d, want at least 1", name, h.Retries)
		}
	}
	for _, name := range cf.longhaulServices() {
		s := cf.Services[name]
		if s.oneShot() || s.Healthcheck == nil {
			continue
		}
		test, ok := s.Healthcheck.exec()
		if !ok {
			continue
		}
		if test[0] != longhaulBinary {
			t.Errorf("%s: healthcheck runs %q, want %s", name, test[0], longhaulBinary)
		}
		probe, err := invocationOf(t, test[1:])
		if err != nil {
			t.Errorf("%s: healthcheck: %v", name, err)
			continue
		}
		for _, p := range probe.problems {
			t.Errorf("%s: healthcheck: %s", name, p)
		}
		if got := strings.Join(probe.path, " "); got != "probe" {
			t.Errorf("%s: healthcheck runs longhaul %s, want longhaul probe", name, got)
			continue
		}
		cmd := serviceInvocation(t, cf, name)
		if cmd == nil || len(probe.args) != 1 {
			continue
		}
		want := "http://127.0.0.1:" + portOf(cmd.value("http-listen")) + "/readyz"
		if probe.args[0] != want {
			t.Errorf("%s: healthcheck probes %s, want %s (its --http-listen)", name, probe.args[0], want)
		}
		probeTimeout, err := time.ParseDuration(probe.value("timeout"))
		if err != nil {
			t.Errorf("%s: probe timeout %q: %v", name, probe.value("timeout"), err)
			continue
		}
		if timeout, err := time.ParseDuration(s.Healthcheck.Timeout); err == nil && timeout <= probeTimeout {
			t.Errorf("%s: healthcheck timeout %s is not above probe's %s: Docker would kill the probe before it says why", name, timeout, probeTimeout)
		}
	}
}

// TestDependencies proves that `docker compose up` can order the services:
// every dependency exists, waits on something its target can report
// (healthy needs a healthcheck, completed needs a one-shot), there is no
// cycle, every one-shot is waited for, and every service waits for each
// service it dials (from its flags), so nothing starts against a dependency
// that is not up yet.
func TestDependencies(t *testing.T) {
	t.Parallel()
	cf := loadCompose(t)
	waitedFor := map[string]bool{}
	for _, name := range cf.names() {
		for dep, cond := range cf.Services[name].DependsOn {
			target := cf.Services[dep]
			switch {
			case target == nil:
				t.Errorf("%s: depends on %q, which is no service", name, dep)
			case cond == "service_healthy" && (target.Healthcheck == nil || target.Healthcheck.Disable):
				t.Errorf("%s: waits for %s to be healthy, but %s has no healthcheck", name, dep, dep)
			case cond == "service_completed_successfully":
				waitedFor[dep] = true
				if !target.oneShot() {
					t.Errorf("%s: waits for %s to complete, but %s runs for good", name, dep, dep)
				}
			case cond != "service_started" && cond != "service_healthy":
				t.Errorf("%s: depends on %s with condition %q", name, dep, cond)
			}
		}
		if cf.dependsOn(name, name) {
			t.Errorf("%s: depends on itself (a cycle)", name)
		}
	}
	for _, name := range cf.names() {
		if cf.Services[name].oneShot() && !waitedFor[name] {
			t.Errorf("%s: a one-shot no service waits for", name)
		}
	}
	for _, name := range cf.longhaulServices() {
		inv := serviceInvocation(t, cf, name)
		if inv == nil {
			continue
		}
		for _, d := range inv.dialed() {
			if d.flag == "join" {
				continue // gossip joins are retried in the background while alone
			}
			if d.host != name && cf.Services[d.host] != nil && !cf.dependsOn(name, d.host) {
				t.Errorf("%s: dials %s (--%s) but does not wait for it in depends_on", name, d.host, d.flag)
			}
		}
	}
}

// TestVolumes proves that what must survive a restart is on a named volume:
// each edge's write-ahead log (each on its own), PostgreSQL's data and
// Kafka's log; that every named volume used is declared and every declared
// one used; and that every file bound into a container exists.
func TestVolumes(t *testing.T) {
	t.Parallel()
	cf := loadCompose(t)
	used := map[string]string{}
	for _, name := range cf.names() {
		for _, m := range cf.Services[name].Volumes {
			switch {
			case m.Type == "bind":
				if _, err := os.Stat(filepath.Join(root, m.Source)); err != nil {
					t.Errorf("%s: binds %s, which is missing: %v", name, m.Source, err)
				}
			case m.Source == "":
				t.Errorf("%s: anonymous volume on %s: name it, or `down` and `up` lose it", name, m.Target)
			default:
				if _, ok := cf.Volumes[m.Source]; !ok {
					t.Errorf("%s: mounts volume %q, not declared under volumes:", name, m.Source)
				}
				if other, ok := used[m.Source]; ok && other != name {
					t.Errorf("%s and %s share volume %q", other, name, m.Source)
				}
				used[m.Source] = name
			}
		}
	}
	for v := range cf.Volumes {
		if _, ok := used[v]; !ok {
			t.Errorf("volume %q is declared but no service mounts it", v)
		}
	}

	edges := 0
	for _, name := range cf.longhaulServices() {
		inv := serviceInvocation(t, cf, name)
		if inv == nil || strings.Join(inv.path, " ") != "edge" {
			continue
		}
		edges++
		dir := inv.value("data-dir")
		if _, ok := cf.Services[name].volumeUnder(dir); !ok {
			t.Errorf("%s: --data-dir %s is on no named volume: its write-ahead log, acknowledged insights included, would die with the container", name, dir)
		}
	}
	if edges == 0 {
		t.Error("no edge service")
	}
	if s := cf.Services["postgres"]; s != nil {
		data := "/var/lib/postgresql/data"
		if v, ok := s.Environment["PGDATA"]; ok {
			data = v
		}
		if _, ok := s.volumeUnder(data); !ok {
			t.Errorf("postgres: %s is on no named volume", data)
		}
	}
	if s := cf.Services["kafka"]; s != nil {
		dirs := s.Environment["KAFKA_LOG_DIRS"]
		if dirs == "" {
			t.Error("kafka: KAFKA_LOG_DIRS unset: the image's default is under /tmp")
		}
		for d := range strings.SplitSeq(dirs, ",") {
			if _, ok := s.volumeUnder(d); d != "" && !ok {
				t.Errorf("kafka: log dir %s is on no named volume", d)
			}
		}
	}
}

// TestPublishedPorts proves that the ports published to the host are bound
// to loopback only, do not collide, and lead to a port the service listens
// on.
func TestPublishedPorts(t *testing.T) {
	t.Parallel()
	cf := loadCompose(t)
	hostPorts := map[string]string{}
	for _, name := range cf.names() {
		served := servedPorts(t, cf, name)
		for _, p := range cf.Services[name].Ports {
			what := fmt.Sprintf("%s: port %s:%s:%s", name, p.HostIP, p.Published, p.Target)
			if p.HostIP != "127.0.0.1" {
				t.Errorf("%s: bind it to 127.0.0.1 (nothing here is authenticated)", what)
			}
			if p.Published == "" {
				t.Errorf("%s: no host port", what)
			} else if other, ok := hostPorts[p.Published]; ok {
				t.Errorf("%s: host port taken by %s too", what, other)
			}
			hostPorts[p.Published] = name
			if !served[p.Target] {
				t.Errorf("%s: %s listens on none of %v there", what, name, keys(served))
			}
		}
	}
}

// TestKafkaListeners proves that the single Kafka node is a consistent
// KRaft broker and controller: its quorum is itself, each advertised
// listener exists, the containers' listener is advertised under the
// service's name, the host's under localhost on its published port, the
// cluster id is what kafka-storage format accepts, and the internal topics
// do not ask for replicas a single node cannot have.
func TestKafkaListeners(t *testing.T) {
	t.Parallel()
	cf := loadCompose(t)
	s := cf.Services["kafka"]
	if s == nil {
		t.Skip("no kafka service (TestServicesAndImages fails)")
	}
	env := s.Environment
	if roles := strings.Split(env["KAFKA_PROCESS_ROLES"], ","); !slices.Contains(roles, "broker") || !slices.Contains(roles, "controller") {
		t.Errorf("KAFKA_PROCESS_ROLES %q: want broker,controller (one node)", env["KAFKA_PROCESS_ROLES"])
	}
	listeners := kafkaListeners(env["KAFKA_LISTENERS"])
	protocols := map[string]string{}
	for item := range strings.SplitSeq(env["KAFKA_LISTENER_SECURITY_PROTOCOL_MAP"], ",") {
		k, v, _ := strings.Cut(item, ":")
		protocols[k] = v
	}
	for l := range listeners {
		if protocols[l] == "" {
			t.Errorf("listener %s has no protocol in KAFKA_LISTENER_SECURITY_PROTOCOL_MAP", l)
		}
	}
	controller := env["KAFKA_CONTROLLER_LISTENER_NAMES"]
	voter := env["KAFKA_NODE_ID"] + "@kafka:" + portOf(listeners[controller])
	if listeners[controller] == "" || env["KAFKA_CONTROLLER_QUORUM_VOTERS"] != voter {
		t.Errorf("KAFKA_CONTROLLER_QUORUM_VOTERS %q: want %q (itself, on its %s listener)", env["KAFKA_CONTROLLER_QUORUM_VOTERS"], voter, controller)
	}
	if inter := env["KAFKA_INTER_BROKER_LISTENER_NAME"]; listeners[inter] == "" {
		t.Errorf("KAFKA_INTER_BROKER_LISTENER_NAME %q: no such listener", inter)
	}
	published := map[string]string{}
	for _, p := range s.Ports {
		published[p.Published] = p.Target
	}
	advertised := kafkaListeners(env["KAFKA_ADVERTISED_LISTENERS"])
	forContainers := false
	for name, addr := range advertised {
		host, port, err := net.SplitHostPort(addr)
		switch {
		case err != nil:
			t.Errorf("advertised listener %s: %q: %v", name, addr, err)
		case listeners[name] == "" || portOf(listeners[name]) != port:
			t.Errorf("advertised listener %s://%s: no listener %s on port %s", name, addr, name, port)
		case host == "kafka":
			forContainers = true
		case host == "localhost" || host == "127.0.0.1":
			if published[port] != port {
				t.Errorf("advertised listener %s://%s: the host reaches it only if port %s is published as %s", name, addr, port, port)
			}
		default:
			t.Errorf("advertised listener %s://%s: neither the service's name nor localhost", name, addr)
		}
	}
	if !forContainers {
		t.Error("no listener advertised as kafka:<port>: the other containers could bootstrap but not reach the broker")
	}
	if err := checkClusterID(env["CLUSTER_ID"]); err != nil {
		t.Errorf("CLUSTER_ID: %v", err)
	}
	for k, v := range env {
		if (strings.HasSuffix(k, "_REPLICATION_FACTOR") || strings.HasSuffix(k, "_MIN_ISR")) && v != "1" {
			t.Errorf("%s=%s: one node holds one replica", k, v)
		}
	}
	for _, k := range []string{"KAFKA_OFFSETS_TOPIC_REPLICATION_FACTOR", "KAFKA_TRANSACTION_STATE_LOG_REPLICATION_FACTOR"} {
		if env[k] != "1" {
			t.Errorf("%s unset: its default (3) keeps consumer groups from working on one node", k)
		}
	}
}

// kafkaListeners parses "NAME://host:port,…" into name → host:port.
func kafkaListeners(s string) map[string]string {
	out := map[string]string{}
	for item := range strings.SplitSeq(s, ",") {
		if name, addr, ok := strings.Cut(strings.TrimSpace(item), "://"); ok {
			out[name] = addr
		}
	}
	return out
}

// servedPorts returns the ports a service listens on, as far as the
// compose file tells: longhaul's from its listen flags, PostgreSQL's,
// Kafka's advertised ones, toxiproxy's API and proxies.
func servedPorts(t *testing.T, cf *composeFile, name string) map[string]bool {
	t.Helper()
	s := cf.Services[name]
	out := map[string]bool{}
	switch repo, _, _ := strings.Cut(s.Image, ":"); {
	case s.builtHere():
		if inv := serviceInvocation(t, cf, name); inv != nil {
			for _, f := range inv.listens() {
				// On loopback, only the container itself reaches it.
				if h, p, _ := net.SplitHostPort(f.value); h == "" || h == "0.0.0.0" || h == "::" {
					out[p] = true
				}
			}
		}
	case repo == "postgres":
		out["5432"] = true
	case repo == "apache/kafka":
		// Clients' listeners; the controller's is the quorum's own.
		controller := strings.Split(s.Environment["KAFKA_CONTROLLER_LISTENER_NAMES"], ",")
		for l, addr := range kafkaListeners(s.Environment["KAFKA_LISTENERS"]) {
			if !slices.Contains(controller, l) {
				out[portOf(addr)] = true
			}
		}
	case repo == "ghcr.io/shopify/toxiproxy":
		out["8474"] = true
		for _, p := range toxiproxyProxies(t) {
			out[portOf(p.Listen)] = true
		}
	}
	return out
}

// portOf returns the port of host:port, or "" if addr is not one.
func portOf(addr string) string {
	_, p, err := net.SplitHostPort(addr)
	if err != nil {
		return ""
	}
	return p
}

func keys[V any](m map[string]V) []string {
	out := make([]string, 0, len(m))
	for k := range m {
		out = append(out, k)
	}
	slices.Sort(out)
	return out
}
