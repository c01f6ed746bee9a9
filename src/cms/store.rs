//! SQLite persistence (WAL, synchronous=FULL): every acknowledged write is committed before the
//! response goes out, so a killed process loses nothing it answered for. The whole state is
//! loaded into memory at start; reads never touch the database.

use super::content::Entry;
use super::keys::KeyRecord;
use super::verifier::StoredHash;
use chrono::{DateTime, Utc};
use rusqlite::{params, Connection, OptionalExtension};
use serde::{de::DeserializeOwned, Serialize};
use std::path::Path;

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("database: {0}")]
    Sql(#[from] rusqlite::Error),
    #[error("stored record is corrupt: {0}")]
    Corrupt(#[from] serde_json::Error),
}

pub struct Store {
    conn: Connection,
}

/// A stored key: its record and its hashes (current first).
pub struct StoredKey {
    pub record: KeyRecord,
    pub hashes: Vec<StoredHash>,
}

fn to_json<T: Serialize>(v: &T) -> Result<String, StoreError> {
    Ok(serde_json::to_string(v)?)
}

fn from_json<T: DeserializeOwned>(s: &str) -> Result<T, StoreError> {
    Ok(serde_json::from_str(s)?)
}

impl Store {
    pub fn open(dir: &Path) -> Result<Store, StoreError> {
        let conn = Connection::open(dir.join("keyward-cms.db"))?;
        conn.pragma_update(None, "journal_mode", "WAL")?;
        conn.pragma_update(None, "synchronous", "FULL")?;
        conn.busy_timeout(std::time::Duration::from_secs(5))?;
        conn.execute_batch(
            "CREATE TABLE IF NOT EXISTS keys (
                id TEXT PRIMARY KEY, name TEXT NOT NULL UNIQUE, record TEXT NOT NULL,
                hash TEXT NOT NULL, prev_hash TEXT, prev_until INTEGER);
             CREATE TABLE IF NOT EXISTS apis (
                name TEXT PRIMARY KEY, created_at TEXT NOT NULL, public_ops TEXT NOT NULL);
             CREATE TABLE IF NOT EXISTS entries (
                env TEXT NOT NULL, api TEXT NOT NULL, id TEXT NOT NULL, doc TEXT NOT NULL,
                PRIMARY KEY (env, api, id));
             CREATE TABLE IF NOT EXISTS settings (name TEXT PRIMARY KEY, value TEXT NOT NULL);
             CREATE TABLE IF NOT EXISTS members (name TEXT PRIMARY KEY, doc TEXT NOT NULL);
             CREATE TABLE IF NOT EXISTS roles (name TEXT PRIMARY KEY, doc TEXT NOT NULL);",
        )?;
        Ok(Store { conn })
    }

    pub fn keys(&self) -> Result<Vec<StoredKey>, StoreError> {
        let mut stmt = self
            .conn
            .prepare("SELECT record, hash, prev_hash, prev_until FROM keys")?;
        let rows = stmt.query_map([], |r| {
            Ok((
                r.get::<_, String>(0)?,
                r.get::<_, String>(1)?,
                r.get::<_, Option<String>>(2)?,
                r.get::<_, Option<i64>>(3)?,
            ))
        })?;
        let mut out = Vec::new();
        for row in rows {
            let (record, hash, prev, until) = row?;
            let mut hashes = vec![StoredHash {
                phc: hash,
                valid_until: None,
            }];
            if let (Some(phc), Some(u)) = (prev, until) {
                hashes.push(StoredHash {
                    phc,
                    valid_until: Some(u),
                });
            }
            out.push(StoredKey {
                record: from_json(&record)?,
                hashes,
            });
        }
        Ok(out)
    }

    pub fn put_key(&self, record: &KeyRecord, hashes: &[StoredHash]) -> Result<(), StoreError> {
        let current = hashes
            .iter()
            .find(|h| h.valid_until.is_none())
            .map(|h| h.phc.as_str());
        let prev = hashes.iter().find(|h| h.valid_until.is_some());
        self.conn.execute(
            "INSERT INTO keys (id, name, record, hash, prev_hash, prev_until) VALUES (?1, ?2, ?3, ?4, ?5, ?6)
             ON CONFLICT(id) DO UPDATE SET name = ?2, record = ?3, hash = ?4, prev_hash = ?5, prev_until = ?6",
            params![
                record.id,
                record.spec.name,
                to_json(record)?,
                current.unwrap_or_default(),
                prev.map(|h| h.phc.as_str()),
                prev.and_then(|h| h.valid_until)
            ],
        )?;
        Ok(())
    }

    pub fn delete_key(&self, id: &str) -> Result<(), StoreError> {
        self.conn.execute("DELETE FROM keys WHERE id = ?1", [id])?;
        Ok(())
    }

    /// APIs with their creation time and public operations (JSON).
    pub fn apis(&self) -> Result<Vec<(String, DateTime<Utc>, String)>, StoreError> {
        let mut stmt = self
            .conn
            .prepare("SELECT name, created_at, public_ops FROM apis")?;
        let rows = stmt.query_map([], |r| {
            Ok((
                r.get::<_, String>(0)?,
                r.get::<_, String>(1)?,
                r.get::<_, String>(2)?,
            ))
        })?;
        let mut out = Vec::new();
        for row in rows {
            let (name, created, ops) = row?;
            let created = DateTime::parse_from_rfc3339(&created)
                .map(|d| d.with_timezone(&Utc))
                .unwrap_or_else(|_| Utc::now());
            out.push((name, created, ops));
        }
        Ok(out)
    }

    pub fn put_api(
        &self,
        name: &str,
        created_at: DateTime<Utc>,
        public_ops: &str,
    ) -> Result<(), StoreError> {
        self.conn.execute(
            "INSERT INTO apis (name, created_at, public_ops) VALUES (?1, ?2, ?3)
             ON CONFLICT(name) DO UPDATE SET public_ops = ?3",
            params![name, created_at.to_rfc3339(), public_ops],
        )?;
        Ok(())
    }

    pub fn entries(&self) -> Result<Vec<(String, String, Entry)>, StoreError> {
        let mut stmt = self.conn.prepare("SELECT env, api, doc FROM entries")?;
        let rows = stmt.query_map([], |r| {
            Ok((
                r.get::<_, String>(0)?,
                r.get::<_, String>(1)?,
                r.get::<_, String>(2)?,
            ))
        })?;
        let mut out = Vec::new();
        for row in rows {
            let (env, api, doc) = row?;
            out.push((env, api, from_json(&doc)?));
        }
        Ok(out)
    }

    pub fn put_entry(&self, env: &str, api: &str, entry: &Entry) -> Result<(), StoreError> {
        self.conn.execute(
            "INSERT INTO entries (env, api, id, doc) VALUES (?1, ?2, ?3, ?4)
             ON CONFLICT(env, api, id) DO UPDATE SET doc = ?4",
            params![env, api, entry.id, to_json(entry)?],
        )?;
        Ok(())
    }

    pub fn delete_entry(&self, env: &str, api: &str, id: &str) -> Result<(), StoreError> {
        self.conn.execute(
            "DELETE FROM entries WHERE env = ?1 AND api = ?2 AND id = ?3",
            [env, api, id],
        )?;
        Ok(())
    }

    pub fn setting<T: DeserializeOwned>(&self, name: &str) -> Result<Option<T>, StoreError> {
        let v: Option<String> = self
            .conn
            .query_row("SELECT value FROM settings WHERE name = ?1", [name], |r| {
                r.get(0)
            })
            .optional()?;
        v.map(|s| from_json(&s)).transpose()
    }

    pub fn put_setting<T: Serialize>(&self, name: &str, value: &T) -> Result<(), StoreError> {
        self.conn.execute(
            "INSERT INTO settings (name, value) VALUES (?1, ?2) ON CONFLICT(name) DO UPDATE SET value = ?2",
            params![name, to_json(value)?],
        )?;
        Ok(())
    }

    /// Rows of a name -> JSON document table (`members`, `roles`).
    pub fn docs<T: DeserializeOwned>(&self, table: DocTable) -> Result<Vec<T>, StoreError> {
        let mut stmt = self
            .conn
            .prepare(&format!("SELECT doc FROM {}", table.name()))?;
        let rows = stmt.query_map([], |r| r.get::<_, String>(0))?;
        rows.map(|r| from_json(&r?)).collect()
    }

    pub fn put_doc<T: Serialize>(
        &self,
        table: DocTable,
        name: &str,
        doc: &T,
    ) -> Result<(), StoreError> {
        self.conn.execute(
            &format!(
                "INSERT INTO {} (name, doc) VALUES (?1, ?2) ON CONFLICT(name) DO UPDATE SET doc = ?2",
                table.name()
            ),
            params![name, to_json(doc)?],
        )?;
        Ok(())
    }

    pub fn delete_doc(&self, table: DocTable, name: &str) -> Result<(), StoreError> {
        self.conn.execute(
            &format!("DELETE FROM {} WHERE name = ?1", table.name()),
            [name],
        )?;
        Ok(())
    }

    /// Runs `f` in one transaction: all of its writes land, or none.
    pub fn atomically<T>(
        &mut self,
        f: impl FnOnce(&Store) -> Result<T, StoreError>,
    ) -> Result<T, StoreError> {
        self.conn.execute_batch("BEGIN IMMEDIATE")?;
        match f(self) {
            Ok(v) => {
                self.conn.execute_batch("COMMIT")?;
                Ok(v)
            }
            Err(e) => {
                let _ = self.conn.execute_batch("ROLLBACK");
                Err(e)
            }
        }
    }
}

#[derive(Clone, Copy)]
pub enum DocTable {
    Members,
    Roles,
}

impl DocTable {
    fn name(self) -> &'static str {
        match self {
            Self::Members => "members",
            Self::Roles => "roles",
        }
    }
}
