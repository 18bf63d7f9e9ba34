-- A session is written by whoever holds its lease: `lease_owner` (the attempt,
-- random) until `lease_until` (the database's clock), renewed while the
-- fragment's bytes flow. A lease past its time is taken by the next request, so
-- a dead or silent holder keeps a session for one lease at most, and no
-- connection is held while a fragment arrives.
ALTER TABLE sessions ADD COLUMN lease_owner text, ADD COLUMN lease_until timestamptz;

-- How many rows of `session_parts` the session has, kept with the row so that a
-- lease reads it with the record it takes (one version of both).
ALTER TABLE sessions ADD COLUMN parts integer NOT NULL DEFAULT 0;

-- The fragments a session counted, one row each, appended as each is counted
-- (a session's record no longer lists them). `attempt` names the object holding
-- the bytes: objects are unique per attempt, so a late or raced write never
-- replaces counted bytes.
CREATE TABLE session_parts (
    session_id text NOT NULL REFERENCES sessions (id) ON DELETE CASCADE,
    start_byte bigint NOT NULL,
    end_byte bigint NOT NULL,
    attempt text NOT NULL,
    PRIMARY KEY (session_id, start_byte)
);
