//! `TABLES_SINCE` against the tables of a fresh store.

use super::*;
use crate::store::Store;

/// Every table a fresh store has is listed in `TABLES_SINCE` with its columns, and the
/// newest entry is the current version: a schema bump that forgets the list fails here
/// (the store fuzz found schema 3's table missing from it).
#[test]
fn tables_since_lists_every_table_of_the_current_schema() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("tradebaas.db");
    drop(Store::open(&path).unwrap());
    let conn = Connection::open(&path).unwrap();
    let mut stmt = conn
        .prepare("SELECT name FROM sqlite_master WHERE type = 'table' ORDER BY name")
        .unwrap();
    let tables: Vec<String> = stmt
        .query_map([], |r| r.get(0))
        .unwrap()
        .map(Result::unwrap)
        .collect();
    for t in &tables {
        let entry = TABLES_SINCE.iter().find(|(_, name, _)| name == t);
        assert!(entry.is_some(), "table {t} is not in TABLES_SINCE");
    }
    assert_eq!(TABLES_SINCE.len(), tables.len(), "{tables:?}");
    assert_eq!(TABLES_SINCE.iter().map(|e| e.0).max(), Some(SCHEMA_VERSION));
    assert!(verify(&path).ok);
}
