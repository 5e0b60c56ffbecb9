-- Environments, agents and their inventories, GPU placement, build results,
-- and deployed tasks (issue 4).

-- Named environments: an owner's own, and the stock ones (owner 'podder',
-- stock = TRUE). `spec` is the EnvSpec as JSON, what a job resolves at submit.
CREATE TABLE environments (
    id INTEGER PRIMARY KEY,
    owner_id INTEGER NOT NULL REFERENCES owners (id),
    name TEXT NOT NULL,
    description TEXT NOT NULL DEFAULT '',
    spec TEXT NOT NULL,
    stock BOOLEAN NOT NULL DEFAULT FALSE,
    created_at INTEGER NOT NULL,
    UNIQUE (owner_id, name)
);

-- Agents as last seen: what they offered (Inventory as JSON) on which queue.
CREATE TABLE agents (
    name TEXT PRIMARY KEY,
    queue TEXT NOT NULL,
    inventory TEXT NOT NULL,
    last_seen INTEGER NOT NULL
);

-- The spec stays the source of truth; these copies serve the claim query.
-- gpus: the indices assigned on the agent (JSON array), set by the claim.
ALTER TABLE jobs ADD COLUMN gpus TEXT NOT NULL DEFAULT '[]';
ALTER TABLE jobs ADD COLUMN gpus_needed INTEGER NOT NULL DEFAULT 0;
ALTER TABLE jobs ADD COLUMN needs_docker BOOLEAN NOT NULL DEFAULT FALSE;
-- What a build job built (BuildResult as JSON), once it succeeded.
ALTER TABLE jobs ADD COLUMN build_result TEXT;

-- The GPUs an agent's leased jobs hold are read on every claim.
CREATE INDEX jobs_agent_leased ON jobs (agent) WHERE state IN ('assigned', 'preparing', 'running');

-- Deployed tasks, one row per project and name; each deploy bumps version.
CREATE TABLE tasks (
    id INTEGER PRIMARY KEY,
    project_id INTEGER NOT NULL REFERENCES projects (id),
    name TEXT NOT NULL,
    version INTEGER NOT NULL,
    spec TEXT NOT NULL,
    environment TEXT NOT NULL,
    -- The number of the build job (in the same project) it was deployed from.
    build_job INTEGER NOT NULL,
    git_commit TEXT,
    obfuscated BOOLEAN NOT NULL DEFAULT FALSE,
    deployed_at INTEGER NOT NULL,
    UNIQUE (project_id, name)
);
