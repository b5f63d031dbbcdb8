//! Applies `migrations/NNNN_*.sql` in order, tracking the applied version in `PRAGMA user_version`.
//!
//! Our own small runner rather than rusqlite_migration or refinery: those crates pin older
//! rusqlite releases, and two rusqlite versions cannot link into one binary.

use std::path::Path;

use rusqlite::{Connection, TransactionBehavior};

use super::{CheckpointError, Result, SqliteResultExt};

/// One schema step: its version (the `user_version` once applied), a name for messages, its SQL.
pub(crate) type Migration = (i64, &'static str, &'static str);

/// Every migration this build knows, oldest first. Released entries are never edited. Versions
/// must increase but need not be consecutive (changes developed in parallel take their numbers
/// ahead of merging).
pub(crate) const MIGRATIONS: &[Migration] = &[
    (
        1,
        "initial",
        include_str!("../../migrations/0001_initial.sql"),
    ),
    (
        2,
        "first_attempt_index",
        include_str!("../../migrations/0002_first_attempt_index.sql"),
    ),
    (
        3,
        "budget_wait",
        include_str!("../../migrations/0003_budget_wait.sql"),
    ),
    (
        4,
        "pacing",
        include_str!("../../migrations/0004_pacing.sql"),
    ),
    (5, "bulk", include_str!("../../migrations/0005_bulk.sql")),
    (
        6,
        "resolve",
        include_str!("../../migrations/0006_resolve.sql"),
    ),
    (
        7,
        "resolve_bulk",
        include_str!("../../migrations/0007_resolve_bulk.sql"),
    ),
];

/// The newest schema version this build can read and write.
pub(crate) fn newest_version() -> i64 {
    newest_of(MIGRATIONS)
}

fn newest_of(migrations: &[Migration]) -> i64 {
    migrations.last().map_or(0, |(version, _, _)| *version)
}

pub(crate) fn user_version(conn: &Connection, path: &Path) -> Result<i64> {
    conn.pragma_query_value(None, "user_version", |row| row.get(0))
        .at(path)
}

/// Brings the schema up to date with [`MIGRATIONS`].
pub(crate) fn migrate(conn: &mut Connection, path: &Path) -> Result<()> {
    apply(conn, path, MIGRATIONS)
}

/// Applies each migration newer than the file's version in its own transaction, together with
/// the version bump, so a failure leaves the file at the last fully applied version.
fn apply(conn: &mut Connection, path: &Path, migrations: &[Migration]) -> Result<()> {
    let supported = newest_of(migrations);
    for &(version, name, sql) in migrations {
        // IMMEDIATE takes the write lock before reading the version, so two processes opening
        // the same fresh file cannot both apply a step.
        let tx = conn
            .transaction_with_behavior(TransactionBehavior::Immediate)
            .at(path)?;
        let found = user_version(&tx, path)?;
        if found > supported {
            return Err(CheckpointError::NewerSchema {
                path: path.to_path_buf(),
                found,
                supported,
            });
        }
        if found >= version {
            continue;
        }
        if let Err(source) = tx.execute_batch(sql) {
            let err = CheckpointError::Sqlite {
                path: path.to_path_buf(),
                source,
            };
            // A full disk stays a storage failure; anything else means the step itself is bad.
            if err.is_storage_failure() {
                return Err(err);
            }
            return Err(CheckpointError::Corrupt {
                path: path.to_path_buf(),
                detail: format!("schema migration {version} ({name}) failed: {err}"),
            });
        }
        tx.pragma_update(None, "user_version", version).at(path)?;
        tx.commit().at(path)?;
    }
    // A file already at the newest version never enters the loop's body, but must still be
    // refused when it is newer than this build.
    let found = user_version(conn, path)?;
    if found > supported {
        return Err(CheckpointError::NewerSchema {
            path: path.to_path_buf(),
            found,
            supported,
        });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn table_names(conn: &Connection) -> Vec<String> {
        let mut stmt = conn
            .prepare("SELECT name FROM sqlite_schema WHERE type = 'table' ORDER BY name")
            .unwrap();
        stmt.query_map([], |row| row.get("name"))
            .unwrap()
            .collect::<rusqlite::Result<_>>()
            .unwrap()
    }

    #[test]
    fn fresh_file_gets_every_migration_and_tables() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("cp.db");
        let mut conn = Connection::open(&path).unwrap();
        migrate(&mut conn, &path).unwrap();
        assert_eq!(user_version(&conn, &path).unwrap(), newest_version());
        assert_eq!(newest_version(), 7);
        assert_eq!(
            table_names(&conn),
            ["conversation", "customer", "job", "pacing", "row"]
                .map(String::from)
                .to_vec()
        );
    }

    #[test]
    fn versions_increase_and_a_gap_is_stepped_over() {
        assert!(MIGRATIONS.windows(2).all(|pair| pair[0].0 < pair[1].0));
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("cp.db");
        let mut conn = Connection::open(&path).unwrap();
        let steps: &[Migration] = &[
            (1, "one", "CREATE TABLE a (x INTEGER);"),
            (4, "four", "CREATE TABLE d (x INTEGER);"),
        ];
        apply(&mut conn, &path, &steps[..1]).unwrap();
        assert_eq!(user_version(&conn, &path).unwrap(), 1);
        apply(&mut conn, &path, steps).unwrap();
        assert_eq!(user_version(&conn, &path).unwrap(), 4);
        assert_eq!(table_names(&conn), vec!["a".to_string(), "d".to_string()]);
        apply(&mut conn, &path, steps).unwrap();
        assert_eq!(user_version(&conn, &path).unwrap(), 4);
    }

    #[test]
    fn reopening_is_a_no_op() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("cp.db");
        let mut conn = Connection::open(&path).unwrap();
        migrate(&mut conn, &path).unwrap();
        conn.execute(
            "INSERT INTO row (line, byte_offset, byte_len, state) VALUES (7, 0, 1, 'pending')",
            [],
        )
        .unwrap();
        drop(conn);
        let mut conn = Connection::open(&path).unwrap();
        migrate(&mut conn, &path).unwrap();
        let rows: i64 = conn
            .query_row("SELECT COUNT(*) FROM row", [], |r| r.get(0))
            .unwrap();
        assert_eq!(rows, 1, "a second migrate must not recreate tables");
        assert_eq!(user_version(&conn, &path).unwrap(), newest_version());
    }

    #[test]
    fn newer_schema_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("cp.db");
        let mut conn = Connection::open(&path).unwrap();
        migrate(&mut conn, &path).unwrap();
        conn.pragma_update(None, "user_version", newest_version() + 5)
            .unwrap();
        match migrate(&mut conn, &path) {
            Err(CheckpointError::NewerSchema {
                found, supported, ..
            }) => {
                assert_eq!(found, newest_version() + 5);
                assert_eq!(supported, newest_version());
            }
            other => panic!("expected NewerSchema, got {other:?}"),
        }
    }

    #[test]
    fn failing_migration_leaves_version_and_schema_unchanged() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("cp.db");
        let mut conn = Connection::open(&path).unwrap();
        let steps: &[Migration] = &[
            (1, "one", "CREATE TABLE a (x INTEGER);"),
            (
                2,
                "broken",
                "CREATE TABLE b (x INTEGER); INSERT INTO missing_table VALUES (1);",
            ),
        ];
        let err = apply(&mut conn, &path, steps).unwrap_err();
        assert!(err.to_string().contains("migration 2 (broken)"), "{err}");
        assert_eq!(user_version(&conn, &path).unwrap(), 1);
        assert_eq!(table_names(&conn), vec!["a".to_string()]);
    }
}
