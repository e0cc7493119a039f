package writepath

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"net"
	"net/url"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/longhaul/longhaul/internal/wan"
	"github.com/longhaul/longhaul/primary/migrate"
)

// cleanupTimeout bounds each cleanup step (dropping a schema, stopping a
// service) once the run is over or cancelled.
const cleanupTimeout = time.Minute

// server is the PostgreSQL the strategies write to. Its admin pool is
// beside the database (no link): it makes the schemas, counts rows and polls
// visibility.
type server struct {
	url     *url.URL
	addr    string // host:port, the upstream of the links
	admin   *pgxpool.Pool
	version string
}

func openServer(ctx context.Context, raw string) (*server, error) {
	u, err := url.Parse(raw)
	if err != nil || (u.Scheme != "postgres" && u.Scheme != "postgresql") {
		return nil, errors.New("writepath: the database URL must be a postgres:// URL")
	}
	cfg, err := pgxpool.ParseConfig(raw)
	if err != nil {
		return nil, fmt.Errorf("writepath: database URL: %w", err)
	}
	host := cfg.ConnConfig.Host
	if strings.HasPrefix(host, "/") {
		return nil, fmt.Errorf("writepath: the database must be reached over TCP (the link is a TCP proxy), not the unix socket %s", host)
	}
	cfg.MaxConns = 2
	s := &server{url: u, addr: net.JoinHostPort(host, strconv.Itoa(int(cfg.ConnConfig.Port)))}
	if s.admin, err = pgxpool.NewWithConfig(ctx, cfg); err != nil {
		return nil, fmt.Errorf("writepath: connect: %w", err)
	}
	if err := s.admin.QueryRow(ctx, `SELECT current_setting('server_version')`).Scan(&s.version); err != nil {
		s.admin.Close()
		return nil, fmt.Errorf("writepath: connect: %w", err)
	}
	return s, nil
}

func (s *server) close() { s.admin.Close() }

// newSchema creates a schema for strategy, migrated to the latest version,
// and returns its name and a URL whose connections see it (search_path in
// the options parameter, as libpq and pgx both understand).
func (s *server) newSchema(ctx context.Context, strategy string) (string, string, error) {
	b := make([]byte, 4)
	_, _ = rand.Read(b) // never fails (crypto/rand)
	name := "writepath_" + strategy + "_" + hex.EncodeToString(b)
	if _, err := s.admin.Exec(ctx, "CREATE SCHEMA "+name); err != nil {
		return "", "", fmt.Errorf("writepath: create schema: %w", err)
	}
	u := *s.url
	q := u.Query()
	q.Set("options", strings.TrimSpace(q.Get("options")+" -c search_path="+name))
	// %20, not +, for the space: libpq does not decode + in a URI.
	u.RawQuery = strings.ReplaceAll(q.Encode(), "+", "%20")
	conn, err := pgx.Connect(ctx, u.String())
	if err == nil {
		_, err = migrate.Up(ctx, conn)
		conn.Close(context.WithoutCancel(ctx))
	}
	if err != nil {
		s.dropSchema(ctx, name)
		return "", "", fmt.Errorf("writepath: migrate schema %s: %w", name, err)
	}
	return name, u.String(), nil
}

// dropSchema drops a strategy's schema, even once ctx has ended.
func (s *server) dropSchema(ctx context.Context, name string) {
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), cleanupTimeout)
	defer cancel()
	_, _ = s.admin.Exec(ctx, "DROP SCHEMA IF EXISTS "+name+" CASCADE")
}

// count is the number of rows in a schema's insights.
func (s *server) count(ctx context.Context, schema string) (int64, error) {
	var n int64
	err := s.admin.QueryRow(ctx, "SELECT count(*) FROM "+schema+".insights").Scan(&n)
	return n, err
}

// settle makes the strategies start alike: what the previous one wrote is
// flushed (a checkpoint, when the user may) rather than left for a
// checkpoint in the middle of the next one.
func (s *server) settle(ctx context.Context) error {
	_, err := s.admin.Exec(ctx, "CHECKPOINT")
	var pgErr *pgconn.PgError
	if errors.As(err, &pgErr) && pgErr.Code == "42501" { // insufficient_privilege
		return nil
	}
	return err
}

// linkedPool opens a pool of size connections to schemaURL through a new
// link with the run's RTT, all connected before it returns, so that the
// clock does not count connecting. Close the pool, then the link.
func linkedPool(ctx context.Context, schemaURL string, rtt time.Duration, size int, upstream string) (*pgxpool.Pool, *wan.Link, error) {
	cfg, err := pgxpool.ParseConfig(schemaURL)
	if err != nil {
		return nil, nil, err
	}
	link, err := wan.Open(upstream)
	if err != nil {
		return nil, nil, err
	}
	link.SetRTT(rtt)
	host, port, _ := net.SplitHostPort(link.Addr())
	p, _ := strconv.Atoi(port)
	cfg.ConnConfig.Host, cfg.ConnConfig.Port, cfg.ConnConfig.Fallbacks = host, uint16(p), nil
	cfg.MaxConns, cfg.MinConns = int32(size), 0
	pool, err := pgxpool.NewWithConfig(ctx, cfg)
	if err != nil {
		link.Close()
		return nil, nil, err
	}
	// All at once: each connection costs a few round trips through the link.
	conns := make([]*pgxpool.Conn, size)
	errs := make([]error, size)
	var wg sync.WaitGroup
	for i := range conns {
		wg.Go(func() { conns[i], errs[i] = pool.Acquire(ctx) })
	}
	wg.Wait()
	for _, c := range conns {
		if c != nil {
			c.Release()
		}
	}
	if err := errors.Join(errs...); err != nil {
		pool.Close()
		link.Close()
		return nil, nil, fmt.Errorf("writepath: connect through the link: %w", err)
	}
	return pool, link, nil
}
