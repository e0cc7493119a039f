-- longhaul schema, version 1. Names are not schema-qualified: the schema is
-- the connection's search_path, so tests can migrate a schema of their own.

-- Insights, one row per key. Last writer wins on
-- (last_seen_at, severity rank, scan_id, checker, details_hash).
CREATE TABLE insights (
    account_id    text        NOT NULL,
    asset         text        NOT NULL,
    kind          text        NOT NULL,
    subject       text        NOT NULL,
    severity      text        NOT NULL CHECK (severity IN ('low', 'moderate', 'high', 'critical')),
    details       jsonb       NOT NULL CHECK (jsonb_typeof(details) = 'object'),
    scan_id       text        NOT NULL,
    checker       text        NOT NULL,
    first_seen_at timestamptz NOT NULL,
    last_seen_at  timestamptz NOT NULL,
    resolved_at   timestamptz,
    -- FNV-64a of the details bytes as the checker sent them: the last
    -- tie-break of last-writer-wins, so that equal timestamps still give one
    -- winner whatever the order.
    details_hash  bigint      NOT NULL,
    PRIMARY KEY (account_id, asset, kind, subject)
);

-- Scan completion finds the insights of one asset through the primary key's
-- (account_id, asset) prefix: no second index to maintain on every upsert.

-- The last sequence number applied per edge. Advanced in the same
-- transaction as the rows, so a batch is applied exactly once.
CREATE TABLE edge_ledger (
    edge_id    text        PRIMARY KEY,
    applied_seq bigint     NOT NULL CHECK (applied_seq >= 0),
    batches    bigint      NOT NULL DEFAULT 0,
    updated_at timestamptz NOT NULL DEFAULT now()
);

-- Rows PostgreSQL refused, with the reason; they never block the rows
-- behind them.
CREATE TABLE dead_letters (
    id          bigint      GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    received_at timestamptz NOT NULL DEFAULT now(),
    edge_id     text        NOT NULL,
    first_seq   bigint      NOT NULL,
    last_seq    bigint      NOT NULL,
    -- The insight key with bytes PostgreSQL cannot store replaced, for people.
    insight_key text        NOT NULL,
    sqlstate    text        NOT NULL,
    reason      text        NOT NULL,
    -- The insight exactly as received (longhaul.v1.BatchInsight, protobuf),
    -- or a quoted text form when it holds bytes protobuf cannot encode.
    payload     bytea       NOT NULL
);

-- Progress of scans: how many of a scan's insights have been applied, and
-- its completion once it arrives. Resolution runs once applied_count reaches
-- insight_count.
CREATE TABLE scans (
    scan_id         text        PRIMARY KEY,
    applied_count   bigint      NOT NULL DEFAULT 0,
    min_observed_at timestamptz,
    account_id      text,
    asset           text,
    checker         text,
    insight_count   bigint,
    started_at      timestamptz,
    finished_at     timestamptz,
    completed_at    timestamptz,
    resolved_at     timestamptz,
    resolved_count  bigint
);

CREATE INDEX scans_waiting ON scans (scan_id) WHERE completed_at IS NOT NULL AND resolved_at IS NULL;
