-- Which owners may read a manifest (GET /manifests/{id}). A manifest's id is
-- a content hash, so the same tree committed by two owners is one row per
-- owner here. Grants are only ever added; garbage collection of the
-- manifest itself does not need them removed (a re-commit grants again).
CREATE TABLE manifest_readers (
    manifest TEXT NOT NULL,
    owner_id INTEGER NOT NULL REFERENCES owners (id) ON DELETE CASCADE,
    PRIMARY KEY (manifest, owner_id)
);

-- Existing records keep their readers: each job's owner reads its code,
-- inputs and output; each dataset's owner reads its versions. (Manifests
-- committed but not yet referenced by a record get no grant: committing
-- them again grants it.)
INSERT INTO manifest_readers (manifest, owner_id)
SELECT m, o FROM (
    SELECT v.manifest AS m, d.owner_id AS o
    FROM dataset_versions v JOIN datasets d ON d.id = v.dataset_id
    UNION
    SELECT j.output AS m, p.owner_id AS o
    FROM jobs j JOIN projects p ON p.id = j.project_id
    WHERE j.output IS NOT NULL
    UNION
    SELECT json_extract(j.spec, '$.code') AS m, p.owner_id AS o
    FROM jobs j JOIN projects p ON p.id = j.project_id
    WHERE json_extract(j.spec, '$.code') IS NOT NULL
    UNION
    SELECT json_extract(i.value, '$.manifest') AS m, p.owner_id AS o
    FROM jobs j JOIN projects p ON p.id = j.project_id, json_each(j.spec, '$.inputs') AS i
    WHERE json_extract(i.value, '$.manifest') IS NOT NULL
) AS t WHERE true
ON CONFLICT DO NOTHING;
