package pgcluster

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"sort"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/jackc/pgx/v5"
)

// Database is the database Start creates.
const Database = "longhaul"

// Options configure Start. The zero value is a fresh cluster in a new
// temporary directory on a free loopback port.
type Options struct {
	// Dir holds the data directory, the log and, when the path is short
	// enough, the unix socket. Default: a new directory under the temporary
	// directory (/tmp when $TMPDIR is long). When Dir/data already holds a
	// cluster it is started as it is.
	Dir string
	// Port is the TCP port on 127.0.0.1. Default (0): a free port, picked
	// again if another process takes it before postgres binds it.
	Port int
	// Settings are extra server settings (postgres -c name=value); they
	// override the defaults of this package. port and
	// unix_socket_directories are this package's to set.
	Settings map[string]string
	// Logger receives start and stop events. Default: discarded.
	Logger *slog.Logger
	// Keep leaves everything in place on Stop (and when Start fails).
	// Default: Stop removes what Start created: all of a directory it made;
	// in a caller's Dir, the log and a data directory initdb made (never one
	// that was there before).
	Keep bool
}

func (o *Options) validate() error {
	if o.Port < 0 || o.Port > 65535 {
		return fmt.Errorf("pgcluster: port %d out of range", o.Port)
	}
	for k := range o.Settings {
		switch k {
		case "":
			return errors.New("pgcluster: empty setting name")
		case "port", "unix_socket_directories":
			return fmt.Errorf("pgcluster: setting %s is set by pgcluster (use Options.Port)", k)
		}
	}
	return nil
}

// defaultSettings are those of a development or test box. Durability stays
// as in production (fsync, synchronous_commit, full_page_writes): the
// benchmarks run against this cluster.
var defaultSettings = map[string]string{
	"listen_addresses":   "127.0.0.1",
	"max_connections":    "200",
	"shared_buffers":     "128MB",
	"fsync":              "on",
	"synchronous_commit": "on",
	"full_page_writes":   "on",
	"log_destination":    "stderr",
	"logging_collector":  "off",
	"log_line_prefix":    "%m [%p] %q%u@%d ",
	"log_timezone":       "UTC",
	"timezone":           "UTC",
}

// socketFile is the longest name PostgreSQL puts in the socket directory;
// the whole path must fit in sun_path (108 bytes on Linux).
const socketFile = "/.s.PGSQL.65535.lock"

// maxSocketPath leaves a margin below sun_path.
const maxSocketPath = 100

// Cluster is a running (or stopped) throwaway PostgreSQL cluster. Its
// methods are safe for concurrent use.
type Cluster struct {
	log     *slog.Logger
	opts    Options
	binDir  string
	cred    *syscall.Credential // nil: run as the current user
	dir     string
	ownDir  bool   // Start created dir: Stop removes all of it
	ownData bool   // Start ran initdb: Stop removes the data directory
	sockDir string // == dir, or a separate short directory Start created
	port    int

	mu      sync.Mutex
	proc    *process // nil while postgres is not running
	stopped bool     // Stop ran: nothing more to do
}

// Start creates (or reuses, see Options.Dir) a cluster, starts it, waits
// until it accepts connections and creates the database "longhaul". ctx
// bounds the whole start. On error nothing is left running and, unless
// opts.Keep, nothing is left on disk. The error wraps ErrNotInstalled when
// the binaries are missing.
func Start(ctx context.Context, opts Options) (*Cluster, error) {
	if err := opts.validate(); err != nil {
		return nil, err
	}
	binDir, err := findBinDir()
	if err != nil {
		return nil, err
	}
	cred, err := serverUser()
	if err != nil {
		return nil, err
	}
	c := &Cluster{log: opts.Logger, opts: opts, binDir: binDir, cred: cred, port: opts.Port}
	if c.log == nil {
		c.log = slog.New(slog.DiscardHandler)
	}
	ok := false
	defer func() {
		if !ok {
			c.abandon()
		}
	}()
	if err := c.makeDirs(); err != nil {
		return nil, err
	}
	if _, err := os.Stat(filepath.Join(c.DataDir(), "PG_VERSION")); err != nil {
		if err := c.initdb(ctx); err != nil {
			return nil, err
		}
		c.ownData = true
	}
	if err := c.startWithPortRetry(ctx); err != nil {
		return nil, err
	}
	if err := c.createDatabase(ctx); err != nil {
		return nil, err
	}
	ok = true
	c.log.Info("pgcluster: started", "url", c.URL(Database), "dir", c.dir, "bin", binDir)
	return c, nil
}

// URL is a connection string for database dbname on this cluster, as the
// superuser postgres over TCP.
func (c *Cluster) URL(dbname string) string {
	u := url.URL{
		Scheme:   "postgres",
		User:     url.User("postgres"),
		Host:     net.JoinHostPort("127.0.0.1", strconv.Itoa(c.port)),
		Path:     "/" + dbname,
		RawQuery: "sslmode=disable",
	}
	return u.String()
}

// Port is the TCP port on 127.0.0.1.
func (c *Cluster) Port() int { return c.port }

// DataDir is the PostgreSQL data directory.
func (c *Cluster) DataDir() string { return filepath.Join(c.dir, "data") }

// SocketDir is the directory of the unix socket (host= for libpq).
func (c *Cluster) SocketDir() string { return c.sockDir }

// LogFile is the server log.
func (c *Cluster) LogFile() string { return filepath.Join(c.dir, "postgres.log") }

// Stop shuts the server down (fast: open transactions are rolled back) and
// removes the directory unless Options.Keep. When ctx ends first the server
// is killed. Safe to call twice; later calls do nothing.
func (c *Cluster) Stop(ctx context.Context) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.stopped {
		return nil
	}
	c.stopped = true
	err := c.shutdown(ctx, syscall.SIGINT)
	if !c.opts.Keep {
		err = errors.Join(err, c.remove())
	}
	c.log.Info("pgcluster: stopped", "dir", c.dir, "kept", c.opts.Keep, "err", err)
	return err
}

// StopImmediate stops the server the way a crash does (immediate shutdown:
// no checkpoint, recovery from the WAL at the next start) and keeps the data
// for Restart.
func (c *Cluster) StopImmediate(ctx context.Context) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.stopped {
		return errors.New("pgcluster: stop immediate: cluster stopped")
	}
	return c.shutdown(ctx, syscall.SIGQUIT)
}

// Restart starts the server again on the same data directory and port (after
// a fast shutdown if it is running) and waits until it accepts connections.
func (c *Cluster) Restart(ctx context.Context) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.stopped {
		return errors.New("pgcluster: restart: cluster stopped")
	}
	if err := c.shutdown(ctx, syscall.SIGINT); err != nil {
		return err
	}
	if err := c.start(ctx); err != nil {
		return fmt.Errorf("pgcluster: restart: %w", err)
	}
	c.log.Info("pgcluster: restarted", "url", c.URL(Database))
	return nil
}

// makeDirs creates the cluster directory and, when its path is too long for
// a unix socket, a short socket directory, both owned by the server user.
func (c *Cluster) makeDirs() error {
	if c.opts.Dir == "" {
		dir, err := os.MkdirTemp(shortTempDir(), "lh")
		if err != nil {
			return fmt.Errorf("pgcluster: %w", err)
		}
		c.dir, c.ownDir = dir, true
	} else {
		dir, err := filepath.Abs(c.opts.Dir)
		if err != nil {
			return fmt.Errorf("pgcluster: %w", err)
		}
		if err := os.MkdirAll(dir, 0o700); err != nil {
			return fmt.Errorf("pgcluster: %w", err)
		}
		c.dir = dir
	}
	if err := c.chown(c.dir); err != nil {
		return err
	}
	c.sockDir = c.dir
	if len(c.dir)+len(socketFile) > maxSocketPath {
		dir, err := os.MkdirTemp("/tmp", "lhs")
		if err != nil {
			return fmt.Errorf("pgcluster: socket directory: %w", err)
		}
		c.sockDir = dir
		if err := c.chown(dir); err != nil {
			return err
		}
	}
	return nil
}

// shortTempDir is $TMPDIR unless its path would leave too little room for
// the socket path.
func shortTempDir() string {
	if d := os.TempDir(); len(d) <= 40 {
		return d
	}
	return "/tmp"
}

func (c *Cluster) chown(path string) error {
	if c.cred == nil {
		return nil
	}
	if err := os.Chown(path, int(c.cred.Uid), int(c.cred.Gid)); err != nil {
		return fmt.Errorf("pgcluster: hand %s to the postgres user: %w", path, err)
	}
	return nil
}

// prepare makes cmd run as the server user, in the cluster directory, in a
// process group of its own (a Ctrl-C meant for the caller does not reach it).
func (c *Cluster) prepare(cmd *exec.Cmd) *exec.Cmd {
	cmd.Dir = c.dir
	cmd.Env = serverEnv()
	cmd.SysProcAttr = &syscall.SysProcAttr{Credential: c.cred, Setpgid: true}
	return cmd
}

func (c *Cluster) initdb(ctx context.Context) error {
	start := time.Now()
	cmd := c.prepare(exec.CommandContext(ctx, filepath.Join(c.binDir, "initdb"),
		"-D", c.DataDir(), "-A", "trust", "-U", "postgres",
		"--no-sync", "-E", "UTF8", "--locale=C", "--no-instructions"))
	out, err := cmd.CombinedOutput()
	if err != nil {
		return fmt.Errorf("pgcluster: initdb: %w\n%s", err, tail(out, 2000))
	}
	c.log.Debug("pgcluster: initdb", "data", c.DataDir(), "took", time.Since(start))
	return nil
}

// startWithPortRetry starts postgres; with no fixed port it picks another
// when some other process took the one picked before postgres bound it.
func (c *Cluster) startWithPortRetry(ctx context.Context) error {
	for attempt := 1; ; attempt++ {
		if c.opts.Port == 0 {
			port, err := freePort()
			if err != nil {
				return err
			}
			c.port = port
		}
		err := c.start(ctx)
		if err == nil {
			return nil
		}
		if c.opts.Port != 0 || attempt == 5 || !strings.Contains(err.Error(), "already in use") {
			return err
		}
		c.log.Debug("pgcluster: port taken, picking another", "port", c.port)
	}
}

func freePort() (int, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, fmt.Errorf("pgcluster: pick a port: %w", err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port, nil
}

// start runs postgres and waits until it accepts connections. On error
// postgres is not running.
func (c *Cluster) start(ctx context.Context) error {
	settings := make(map[string]string, len(defaultSettings)+len(c.opts.Settings)+2)
	for k, v := range defaultSettings {
		settings[k] = v
	}
	for k, v := range c.opts.Settings {
		settings[k] = v
	}
	settings["port"] = strconv.Itoa(c.port)
	settings["unix_socket_directories"] = c.sockDir
	names := make([]string, 0, len(settings))
	for k := range settings {
		names = append(names, k)
	}
	sort.Strings(names)
	args := []string{"-D", c.DataDir()}
	for _, k := range names {
		args = append(args, "-c", k+"="+settings[k])
	}

	logf, err := os.OpenFile(c.LogFile(), os.O_WRONLY|os.O_CREATE|os.O_APPEND, 0o644)
	if err != nil {
		return fmt.Errorf("pgcluster: log file: %w", err)
	}
	defer logf.Close() // the child holds its own descriptor
	logStart, _ := logf.Seek(0, io.SeekEnd)

	// Not CommandContext: the server outlives this call and is stopped by
	// signals (shutdown).
	cmd := c.prepare(exec.Command(filepath.Join(c.binDir, "postgres"), args...))
	cmd.Stdout, cmd.Stderr = logf, logf
	// Should this process die without Stop, the kernel kills the postmaster;
	// its backends then exit on their own.
	cmd.SysProcAttr.Pdeathsig = syscall.SIGKILL
	p, err := startProcess(cmd)
	if err != nil {
		return fmt.Errorf("pgcluster: start postgres: %w", err)
	}
	c.proc = p
	if err := c.waitReady(ctx); err != nil {
		_ = c.shutdown(context.Background(), syscall.SIGKILL)
		return fmt.Errorf("%w\n%s", err, c.logSince(logStart))
	}
	return nil
}

// waitReady connects until the server answers, postgres exits or ctx ends.
func (c *Cluster) waitReady(ctx context.Context) error {
	delay := 10 * time.Millisecond
	var lastErr error
	for {
		attempt, cancel := context.WithTimeout(ctx, 5*time.Second)
		conn, err := pgx.Connect(attempt, c.URL("postgres"))
		cancel()
		if err == nil {
			return conn.Close(ctx)
		}
		lastErr = err
		select {
		case <-c.proc.done:
			return fmt.Errorf("pgcluster: postgres exited during start: %v", c.proc.err)
		case <-ctx.Done():
			return fmt.Errorf("pgcluster: postgres not ready: %w (last attempt: %v)", ctx.Err(), lastErr)
		case <-time.After(delay):
		}
		delay = min(2*delay, 200*time.Millisecond)
	}
}

func (c *Cluster) createDatabase(ctx context.Context) error {
	conn, err := pgx.Connect(ctx, c.URL("postgres"))
	if err != nil {
		return fmt.Errorf("pgcluster: %w", err)
	}
	defer conn.Close(context.Background())
	var exists bool
	if err := conn.QueryRow(ctx, "SELECT EXISTS (SELECT 1 FROM pg_database WHERE datname = $1)", Database).Scan(&exists); err != nil {
		return fmt.Errorf("pgcluster: %w", err)
	}
	if exists {
		return nil
	}
	if _, err := conn.Exec(ctx, "CREATE DATABASE "+pgx.Identifier{Database}.Sanitize()); err != nil {
		return fmt.Errorf("pgcluster: create database %s: %w", Database, err)
	}
	return nil
}

// shutdown sends sig to the postmaster and waits until it exits; when ctx
// ends first, it kills it. SIGINT is a fast shutdown, SIGQUIT an immediate
// one (see the PostgreSQL manual, "Shutting Down the Server").
func (c *Cluster) shutdown(ctx context.Context, sig syscall.Signal) error {
	p := c.proc
	if p == nil {
		return nil
	}
	c.proc = nil
	if err := p.cmd.Process.Signal(sig); err != nil && !errors.Is(err, os.ErrProcessDone) {
		return fmt.Errorf("pgcluster: signal postgres: %w", err)
	}
	select {
	case <-p.done:
		return nil
	case <-ctx.Done():
		_ = p.cmd.Process.Kill()
		<-p.done
		return fmt.Errorf("pgcluster: postgres did not stop in time, killed: %w", ctx.Err())
	}
}

// abandon undoes a failed Start.
func (c *Cluster) abandon() {
	_ = c.shutdown(context.Background(), syscall.SIGKILL)
	if c.opts.Keep || c.dir == "" {
		return
	}
	_ = c.remove()
}

// remove deletes what this package created: all of the directory when Start
// made it; otherwise the log, and the data directory when Start ran initdb
// (a data directory that was there before Start stays).
func (c *Cluster) remove() error {
	var err error
	if c.sockDir != "" && c.sockDir != c.dir {
		err = errors.Join(err, os.RemoveAll(c.sockDir))
	}
	if c.ownDir {
		return errors.Join(err, os.RemoveAll(c.dir))
	}
	if c.ownData {
		err = errors.Join(err, os.RemoveAll(c.DataDir()))
	}
	if rmErr := os.Remove(c.LogFile()); rmErr != nil && !errors.Is(rmErr, os.ErrNotExist) {
		err = errors.Join(err, rmErr)
	}
	_ = os.Remove(c.dir) // only if empty: the directory is the caller's
	return err
}

// logSince returns the server log written since offset (at most its end).
func (c *Cluster) logSince(offset int64) string {
	b, err := os.ReadFile(c.LogFile())
	if err != nil || offset > int64(len(b)) {
		return ""
	}
	return string(tail(b[offset:], 4000))
}

func tail(b []byte, n int) []byte {
	if len(b) > n {
		return b[len(b)-n:]
	}
	return b
}

// process is a running postmaster.
type process struct {
	cmd  *exec.Cmd
	done chan struct{} // closed once the process has exited
	err  error         // its exit status, set before done is closed
}

// startProcess starts cmd from an OS thread that stays alive while the
// process runs: Linux sends the parent-death signal when the thread that
// forked the child exits, not the process (https://go.dev/issue/27505).
func startProcess(cmd *exec.Cmd) (*process, error) {
	p := &process{cmd: cmd, done: make(chan struct{})}
	started := make(chan error, 1)
	go func() {
		// Never unlocked: the thread ends with this goroutine, after the
		// child has exited.
		runtime.LockOSThread()
		if err := cmd.Start(); err != nil {
			started <- err
			return
		}
		started <- nil
		p.err = cmd.Wait()
		close(p.done)
	}()
	if err := <-started; err != nil {
		return nil, err
	}
	return p, nil
}
