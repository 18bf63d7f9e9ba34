-- OneDrive's drives: each row is one drive's folders and files as one JSON value
-- (`core::drive::Tree`), replaced only over the version it was read at, so two
-- nodes changing one drive never lose each other's change.
CREATE TABLE drives (
    id text PRIMARY KEY,
    version bigint NOT NULL,
    record jsonb NOT NULL
);

-- A drive file's bytes are a finished upload's, recorded as an attachment whose
-- item_id is the drive's id: it names an item or a drive from now on.
ALTER TABLE attachments DROP CONSTRAINT IF EXISTS attachments_item_id_fkey;
