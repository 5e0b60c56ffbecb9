-- The first schema. Times are Unix milliseconds; JSON is TEXT.
CREATE TABLE owners (
    id INTEGER PRIMARY KEY,
    name TEXT NOT NULL UNIQUE,
    admin BOOLEAN NOT NULL DEFAULT FALSE,
    created_at INTEGER NOT NULL
);

-- Only the BLAKE3 hash of a token is stored, never the token.
CREATE TABLE tokens (
    hash TEXT PRIMARY KEY,
    owner_id INTEGER NOT NULL REFERENCES owners (id) ON DELETE CASCADE,
    created_at INTEGER NOT NULL
);

CREATE TABLE projects (
    id INTEGER PRIMARY KEY,
    owner_id INTEGER NOT NULL REFERENCES owners (id),
    name TEXT NOT NULL,
    description TEXT NOT NULL DEFAULT '',
    -- The last job number handed out; the next job gets last_job + 1.
    last_job INTEGER NOT NULL DEFAULT 0,
    created_at INTEGER NOT NULL,
    UNIQUE (owner_id, name)
);

CREATE TABLE jobs (
    id INTEGER PRIMARY KEY,
    project_id INTEGER NOT NULL REFERENCES projects (id),
    number INTEGER NOT NULL,
    state TEXT NOT NULL,
    queue TEXT NOT NULL,
    spec TEXT NOT NULL,
    message TEXT,
    output TEXT,
    exit_code INTEGER,
    reason TEXT,
    attempt INTEGER NOT NULL DEFAULT 1,
    agent TEXT,
    restarted_from TEXT,
    lease_id TEXT UNIQUE,
    lease_expires_at INTEGER,
    stop_requested BOOLEAN NOT NULL DEFAULT FALSE,
    -- Added to the seq of every log line the current attempt uploads.
    log_base INTEGER NOT NULL DEFAULT 0,
    created_at INTEGER NOT NULL,
    started_at INTEGER,
    finished_at INTEGER,
    UNIQUE (project_id, number)
);

CREATE INDEX jobs_queued ON jobs (queue, id) WHERE state = 'queued';
CREATE INDEX jobs_lease_expiry ON jobs (lease_expires_at) WHERE lease_expires_at IS NOT NULL;

CREATE TABLE log_lines (
    job_id INTEGER NOT NULL REFERENCES jobs (id) ON DELETE CASCADE,
    seq INTEGER NOT NULL,
    ts INTEGER NOT NULL,
    stream TEXT NOT NULL,
    text TEXT NOT NULL,
    PRIMARY KEY (job_id, seq)
);
