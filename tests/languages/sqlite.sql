-- SQLite reads no stdin: the SQL runs against a fresh in-memory database.
CREATE TABLE t (name TEXT);
INSERT INTO t VALUES ('kiln');
SELECT 'hello ' || name FROM t;
SELECT * FROM no_such_table;
