-- The slot a form upload takes on its link before its file is read (`links.uploaded_files` + 1),
-- until the file is stored (the row is dropped) or refused (the slot is given back with it).
-- A server killed in between leaves the row: start-up settles it (`db::links::settle_form_slots`),
-- keeping the slot if the file was stored and giving it back if not, so a crash never leaks one.
CREATE TABLE link_form_slots (
    id        TEXT    PRIMARY KEY,
    link_id   TEXT    NOT NULL,
    bucket    TEXT    NOT NULL,
    key       TEXT    NOT NULL,
    taken_at  INTEGER NOT NULL
);
