-- Datasets, their versions, the inputs of jobs, and the sizes of outputs.

CREATE TABLE datasets (
    id INTEGER PRIMARY KEY,
    owner_id INTEGER NOT NULL REFERENCES owners (id),
    name TEXT NOT NULL,
    description TEXT NOT NULL DEFAULT '',
    -- The number the next version gets; never decreases, so a number is
    -- never handed out twice, even after the newest version is deleted.
    next_version INTEGER NOT NULL DEFAULT 1,
    created_at INTEGER NOT NULL,
    UNIQUE (owner_id, name)
);

CREATE TABLE dataset_versions (
    id INTEGER PRIMARY KEY,
    dataset_id INTEGER NOT NULL REFERENCES datasets (id) ON DELETE CASCADE,
    version INTEGER NOT NULL,
    manifest TEXT NOT NULL,
    files INTEGER NOT NULL,
    bytes INTEGER NOT NULL,
    message TEXT,
    -- Where it came from when it was not uploaded, e.g. 'alice/mnist#12'.
    source TEXT,
    created_at INTEGER NOT NULL,
    UNIQUE (dataset_id, version)
);

CREATE INDEX dataset_versions_manifest ON dataset_versions (manifest);

-- Every input of a job, as resolved at submit (a copy of the spec's inputs
-- that SQL can join). dataset_version_id links an input to the version it
-- mounts, so a version mounted by an active job cannot be deleted. Jobs
-- created before this migration have no rows; they could not mount datasets.
CREATE TABLE job_inputs (
    job_id INTEGER NOT NULL REFERENCES jobs (id) ON DELETE CASCADE,
    position INTEGER NOT NULL,
    source TEXT NOT NULL,
    manifest TEXT NOT NULL,
    dataset_version_id INTEGER REFERENCES dataset_versions (id) ON DELETE SET NULL,
    PRIMARY KEY (job_id, position)
);

CREATE INDEX job_inputs_version ON job_inputs (dataset_version_id) WHERE dataset_version_id IS NOT NULL;

-- The total file bytes of a job's output, for storage quotas (NULL for
-- outputs recorded before this migration: they count as 0).
ALTER TABLE jobs ADD COLUMN output_bytes INTEGER;

CREATE INDEX jobs_output ON jobs (output) WHERE output IS NOT NULL;
