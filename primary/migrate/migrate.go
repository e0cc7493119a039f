// Package migrate owns longhaul's PostgreSQL schema: embedded SQL files,
// applied in order on start.
//
// Up is safe to run from several processes at once: it takes a
// transaction-scoped advisory lock, so one process applies each version and
// the others wait and then find it applied. Table names are not
// schema-qualified; the connection's search_path decides where they go.
package migrate

import (
	"context"
	"embed"
	"fmt"
	"io/fs"
	"sort"
	"strconv"
	"strings"

	"github.com/jackc/pgx/v5"
)

//go:embed sql/*.sql
var files embed.FS

// lockKey is the advisory lock migrations hold ("longhaul" in ASCII).
const lockKey = 0x6c6f6e6768617566

// Migration is one embedded schema version.
type Migration struct {
	Version int
	Name    string
	SQL     string
}

// All returns the embedded migrations in version order.
func All() ([]Migration, error) {
	entries, err := fs.ReadDir(files, "sql")
	if err != nil {
		return nil, err
	}
	var out []Migration
	for _, e := range entries {
		name := e.Name()
		num, _, ok := strings.Cut(name, "_")
		if !ok {
			return nil, fmt.Errorf("migrate: %s: name must be NNNN_what.sql", name)
		}
		v, err := strconv.Atoi(num)
		if err != nil {
			return nil, fmt.Errorf("migrate: %s: %w", name, err)
		}
		body, err := files.ReadFile("sql/" + name)
		if err != nil {
			return nil, err
		}
		out = append(out, Migration{Version: v, Name: name, SQL: string(body)})
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Version < out[j].Version })
	for i := range out {
		if out[i].Version != i+1 {
			return nil, fmt.Errorf("migrate: versions must run 1, 2, …: found %d at place %d", out[i].Version, i+1)
		}
	}
	return out, nil
}

// Latest is the version Up brings a database to.
func Latest() int {
	all, err := All()
	if err != nil || len(all) == 0 {
		return 0
	}
	return all[len(all)-1].Version
}

// Querier is what Up needs of a connection or pool.
type Querier interface {
	Begin(ctx context.Context) (pgx.Tx, error)
}

// Up applies every migration the database lacks, each in its own
// transaction, and returns the number applied.
func Up(ctx context.Context, db Querier) (int, error) {
	all, err := All()
	if err != nil {
		return 0, err
	}
	applied := 0
	for _, m := range all {
		did, err := apply(ctx, db, m)
		if err != nil {
			return applied, fmt.Errorf("migrate: %s: %w", m.Name, err)
		}
		if did {
			applied++
		}
	}
	return applied, nil
}

func apply(ctx context.Context, db Querier, m Migration) (bool, error) {
	tx, err := db.Begin(ctx)
	if err != nil {
		return false, err
	}
	defer tx.Rollback(ctx) //nolint:errcheck // after Commit it is a no-op
	if _, err := tx.Exec(ctx, "SELECT pg_advisory_xact_lock($1)", int64(lockKey)); err != nil {
		return false, err
	}
	// Created only when missing, not with IF NOT EXISTS (which needs the
	// CREATE privilege on the schema even when the table exists): a role
	// that may not change the schema can run Up on a migrated database.
	var present bool
	if err := tx.QueryRow(ctx, "SELECT to_regclass('schema_migrations') IS NOT NULL").Scan(&present); err != nil {
		return false, err
	}
	if !present {
		if _, err := tx.Exec(ctx, `CREATE TABLE schema_migrations (
		version    integer     PRIMARY KEY,
		name       text        NOT NULL,
		applied_at timestamptz NOT NULL DEFAULT now())`); err != nil {
			return false, err
		}
	}
	var exists bool
	if err := tx.QueryRow(ctx, "SELECT EXISTS (SELECT 1 FROM schema_migrations WHERE version = $1)", m.Version).Scan(&exists); err != nil {
		return false, err
	}
	if exists {
		return false, tx.Commit(ctx)
	}
	if _, err := tx.Exec(ctx, m.SQL); err != nil {
		return false, err
	}
	if _, err := tx.Exec(ctx, "INSERT INTO schema_migrations (version, name) VALUES ($1, $2)", m.Version, m.Name); err != nil {
		return false, err
	}
	return true, tx.Commit(ctx)
}

// Current returns the highest applied version, 0 for an empty database.
func Current(ctx context.Context, db interface {
	QueryRow(ctx context.Context, sql string, args ...any) pgx.Row
}) (int, error) {
	var v int
	err := db.QueryRow(ctx, `SELECT coalesce(max(version), 0) FROM schema_migrations`).Scan(&v)
	if err != nil {
		return 0, fmt.Errorf("migrate: read version: %w", err)
	}
	return v, nil
}
