//! Applies `migrations/NNNN_*.sql` in order, tracking the applied version in `PRAGMA user_version`.
//!
//! Our own small runner rather than rusqlite_migration or refinery: those crates pin older
//! rusqlite releases, and two rusqlite versions cannot link into one binary.
