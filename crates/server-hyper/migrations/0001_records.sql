-- upsession's records. Each row holds the JSON record the disk store writes to a
-- file; the columns beside it are what queries need.

-- The key that signs uploadUrl credentials: one for every node.
CREATE TABLE server_key (
    id integer PRIMARY KEY CHECK (id = 1),
    key bytea NOT NULL
);

-- Draft messages and events.
CREATE TABLE items (
    id text PRIMARY KEY,
    record jsonb NOT NULL
);

-- Finished attachments; `seq` keeps them in the order they were finished.
CREATE TABLE attachments (
    id text PRIMARY KEY,
    seq bigserial NOT NULL,
    item_id text NOT NULL REFERENCES items (id),
    record jsonb NOT NULL
);
CREATE INDEX attachments_by_item ON attachments (item_id, seq);

-- Upload sessions, open or completed, until they expire. `deadline` is when the
-- sweeper must look at the session next (its expiry).
CREATE TABLE sessions (
    id text PRIMARY KEY,
    record jsonb NOT NULL,
    deadline timestamptz
);
CREATE INDEX sessions_by_deadline ON sessions (deadline);
