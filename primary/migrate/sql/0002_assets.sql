-- longhaul schema, version 2: what the scheduler (package scheduler) keeps.

-- Registered assets, each on its own schedule. next_scan_at is when the
-- asset is due next; the scheduler claims due rows with
-- SELECT … FOR UPDATE SKIP LOCKED, produces their jobs, and moves
-- next_scan_at one interval on in the same transaction.
CREATE TABLE assets (
    account_id         text        NOT NULL,
    asset              text        NOT NULL,
    plan               text        NOT NULL CHECK (plan IN ('free', 'pro', 'business', 'enterprise')),
    checks             text[]      NOT NULL CHECK (cardinality(checks) > 0),
    next_scan_at       timestamptz NOT NULL,
    last_scheduled_at  timestamptz,
    last_job_id        text,
    -- The cost of the last scan learned from the scans table: the longest
    -- check of the job and the insights of all of them. NULL: unknown yet.
    last_scan_duration interval,
    last_insight_count bigint,
    -- The job the cost was learned from and the latest completion of it
    -- seen: a completion that becomes visible late does not overwrite the
    -- cost learned from a later one.
    cost_job_id        text,
    cost_observed_at   timestamptz,
    created_at         timestamptz NOT NULL DEFAULT now(),
    updated_at         timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (account_id, asset)
);

-- Due assets, earliest first.
CREATE INDEX assets_due ON assets (next_scan_at);

-- On-demand scan requests: every asset of an account, or one asset, and
-- optionally only the check producing one kind of insight. A request is
-- served in pages of assets (cursor: the last asset a job went out for) and
-- is done when done_at is set.
CREATE TABLE scan_requests (
    id           bigint      GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    account_id   text        NOT NULL,
    asset        text,
    kind         text,
    check_name   text,
    asset_count  integer     NOT NULL,
    requested_at timestamptz NOT NULL DEFAULT now(),
    cursor       text,
    job_count    integer     NOT NULL DEFAULT 0,
    done_at      timestamptz
);

CREATE INDEX scan_requests_pending ON scan_requests (id) WHERE done_at IS NULL;

-- The scheduler learns each asset's scan cost from the completions that
-- arrived since its last pass. completed_at is set once per scan, so the
-- primary's progress updates (applied_count) stay heap-only.
CREATE INDEX scans_completed ON scans (completed_at) WHERE completed_at IS NOT NULL;
