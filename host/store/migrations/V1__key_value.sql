-- Every table of the store as rows of one table: the table's name, the key, the value, as
-- sled holds them (bytea sorts byte by byte, like sled's keys).
CREATE TABLE writ_kv (
    tbl TEXT NOT NULL,
    k BYTEA NOT NULL,
    v BYTEA NOT NULL,
    PRIMARY KEY (tbl, k)
);
