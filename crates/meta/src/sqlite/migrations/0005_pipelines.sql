-- Pipelines (issue 5): the pipelines of a project, their versions (the
-- file as applied), their runs (the DAG's state as JSON), the link from a
-- step's job to its run and step, and the step cache.

-- One row per project and name; `version` is the current version.
-- `last_scheduled`: the last schedule instant handled (a run created or
-- skipped because max_active_runs were active); the schedule's clock starts
-- at creation, and again at a resume (paused instants are not run).
CREATE TABLE pipelines (
    id INTEGER PRIMARY KEY,
    project_id INTEGER NOT NULL REFERENCES projects (id),
    name TEXT NOT NULL,
    version INTEGER NOT NULL,
    paused BOOLEAN NOT NULL DEFAULT FALSE,
    -- Whether the current version has a schedule (the cron loop reads these).
    scheduled BOOLEAN NOT NULL DEFAULT FALSE,
    last_scheduled INTEGER NOT NULL,
    -- Runs are numbered per pipeline from 1.
    last_run INTEGER NOT NULL DEFAULT 0,
    created_at INTEGER NOT NULL,
    updated_at INTEGER NOT NULL,
    UNIQUE (project_id, name)
);

-- Every applied version: the file as written, its parsed spec (JSON), and
-- the code snapshot inline steps run on.
CREATE TABLE pipeline_versions (
    id INTEGER PRIMARY KEY,
    pipeline_id INTEGER NOT NULL REFERENCES pipelines (id),
    version INTEGER NOT NULL,
    file TEXT NOT NULL,
    file_name TEXT NOT NULL,
    spec TEXT NOT NULL,
    code TEXT,
    created_at INTEGER NOT NULL,
    UNIQUE (pipeline_id, version)
);

-- Runs. `state` is podder_pipeline::RunState as JSON, rewritten with every
-- transition; `revision` grows with each write (long-polls and optimistic
-- concurrency); `outcome` is NULL while the run is active.
CREATE TABLE pipeline_runs (
    id INTEGER PRIMARY KEY,
    pipeline_id INTEGER NOT NULL REFERENCES pipelines (id),
    number INTEGER NOT NULL,
    version INTEGER NOT NULL,
    trigger TEXT NOT NULL,
    scheduled_for INTEGER,
    params TEXT NOT NULL,
    state TEXT NOT NULL,
    outcome TEXT,
    revision INTEGER NOT NULL,
    retry_of INTEGER,
    created_at INTEGER NOT NULL,
    finished_at INTEGER,
    UNIQUE (pipeline_id, number)
);

CREATE INDEX pipeline_runs_active ON pipeline_runs (pipeline_id) WHERE outcome IS NULL;

-- The job of each step attempt. Created in the transaction that creates the
-- job and records it in the run's state, so a step attempt has at most one job.
CREATE TABLE step_jobs (
    job_id INTEGER PRIMARY KEY REFERENCES jobs (id),
    run_id INTEGER NOT NULL REFERENCES pipeline_runs (id),
    step TEXT NOT NULL,
    attempt INTEGER NOT NULL,
    UNIQUE (run_id, step, attempt)
);

-- `cache: true`: a step's cache key (code, environment, command, setup,
-- parameters, inputs) to the output of the job that last succeeded with it.
CREATE TABLE step_cache (
    project_id INTEGER NOT NULL REFERENCES projects (id),
    cache_key TEXT NOT NULL,
    output TEXT NOT NULL,
    job_id INTEGER NOT NULL REFERENCES jobs (id),
    created_at INTEGER NOT NULL,
    PRIMARY KEY (project_id, cache_key)
);
