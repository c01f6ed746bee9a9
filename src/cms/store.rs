//! SQLite persistence (WAL, synchronous=FULL): every acknowledged write is committed before the
//! response goes out, so a killed process loses nothing it answered for. The whole state is
//! loaded into memory at start; reads never touch the database.
//!
//! A stored document that no longer decodes never keeps the service from starting: it is logged
//! by its id and moved to the `quarantine` table, and everything else loads.

use super::content::Entry;
use super::keys::KeyRecord;
use super::verifier::StoredHash;
use jiff::Timestamp;
use rusqlite::{params, Connection, OptionalExtension};
use serde::{de::DeserializeOwned, Serialize};
use std::path::Path;

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("database: {0}")]
    Sql(#[from] rusqlite::Error),
    #[error("stored record is corrupt: {0}")]
    Corrupt(#[from] serde_json::Error),
    #[error("cannot create the database file: {0}")]
    Io(#[from] std::io::Error),
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

/// An entry as it is stored (its size is what the content limits count).
pub fn entry_document(entry: &Entry) -> Result<String, StoreError> {
    to_json(entry)
}

fn from_json<T: DeserializeOwned>(s: &str) -> Result<T, StoreError> {
    Ok(serde_json::from_str(s)?)
}

impl Store {
    /// Moves the write-ahead log into the database and empties it (on shutdown: the data
    /// directory is then one file that a backup can copy).
    pub fn checkpoint(&self) -> Result<(), StoreError> {
        self.conn
            .query_row("PRAGMA wal_checkpoint(TRUNCATE)", [], |_| Ok(()))?;
        Ok(())
    }

    pub fn open(dir: &Path) -> Result<Store, StoreError> {
        let path = dir.join("keyward-cms.db");
        // Created owner-only before SQLite opens it; SQLite gives its WAL and shared-memory
        // files the same mode.
        let mut create = std::fs::OpenOptions::new();
        create.write(true).create(true).truncate(false);
        #[cfg(unix)]
        std::os::unix::fs::OpenOptionsExt::mode(&mut create, 0o600);
        create.open(&path)?;
        let conn = Connection::open(&path)?;
        conn.pragma_update(None, "journal_mode", "WAL")?;
        conn.pragma_update(None, "synchronous", "FULL")?;
        conn.busy_timeout(std::time::Duration::from_secs(5))?;
        Self::create_schema(&conn)?;
        Ok(Store { conn })
    }

    fn create_schema(conn: &Connection) -> Result<(), StoreError> {
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
             CREATE TABLE IF NOT EXISTS roles (name TEXT PRIMARY KEY, doc TEXT NOT NULL);
             CREATE TABLE IF NOT EXISTS quarantine (
                tbl TEXT NOT NULL, id TEXT NOT NULL, raw TEXT NOT NULL, error TEXT NOT NULL,
                at TEXT NOT NULL);",
        )?;
        let version: i64 = conn.pragma_query_value(None, "user_version", |r| r.get(0))?;
        if version < 1 {
            // Version 1: a grace period ends at a millisecond (`prev_until_ms`), not a second.
            let has_ms = conn
                .prepare("SELECT prev_until_ms FROM keys LIMIT 0")
                .is_ok();
            let tx = conn.unchecked_transaction()?;
            if !has_ms {
                tx.execute_batch(
                    "ALTER TABLE keys ADD COLUMN prev_until_ms INTEGER;
                     UPDATE keys SET prev_until_ms = prev_until * 1000 WHERE prev_until IS NOT NULL;",
                )?;
            }
            tx.pragma_update(None, "user_version", 1)?;
            tx.commit()?;
        }
        Ok(())
    }

    /// Decodes one stored document; one that does not decode is logged and moved aside (`remove`
    /// deletes it from its table) so that the rest can load.
    fn decode_or_quarantine<T: DeserializeOwned>(
        &self,
        table: &str,
        id: &str,
        raw: &str,
        remove: impl FnOnce(&Store) -> Result<(), StoreError>,
    ) -> Result<Option<T>, StoreError> {
        let err = match from_json(raw) {
            Ok(v) => return Ok(Some(v)),
            Err(e) => e.to_string(),
        };
        tracing::error!(table, id, error = %err, "a stored record does not decode; it is moved to the quarantine table and skipped");
        self.conn.execute_batch("SAVEPOINT quarantine")?;
        let moved = self
            .conn
            .execute(
                "INSERT INTO quarantine (tbl, id, raw, error, at) VALUES (?1, ?2, ?3, ?4, ?5)",
                params![table, id, raw, err, crate::model::rfc3339(Timestamp::now())],
            )
            .map_err(StoreError::from)
            .and_then(|_| remove(self));
        match moved {
            Ok(()) => self.conn.execute_batch("RELEASE quarantine")?,
            Err(e) => {
                self.conn
                    .execute_batch("ROLLBACK TO quarantine; RELEASE quarantine")?;
                return Err(e);
            }
        }
        Ok(None)
    }

    pub fn keys(&self) -> Result<Vec<StoredKey>, StoreError> {
        type Row = (String, String, String, Option<String>, Option<i64>);
        let rows: Vec<Row> = {
            let mut stmt = self
                .conn
                .prepare("SELECT id, record, hash, prev_hash, prev_until_ms FROM keys")?;
            let rows = stmt.query_map([], |r| {
                Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?, r.get(4)?))
            })?;
            rows.collect::<Result<_, _>>()?
        };
        let mut out = Vec::new();
        for (id, record, hash, prev, until) in rows {
            let Some(record) =
                self.decode_or_quarantine("keys", &id, &record, |s| s.delete_key(&id))?
            else {
                continue;
            };
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
            out.push(StoredKey { record, hashes });
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
            "INSERT INTO keys (id, name, record, hash, prev_hash, prev_until_ms) VALUES (?1, ?2, ?3, ?4, ?5, ?6)
             ON CONFLICT(id) DO UPDATE SET name = ?2, record = ?3, hash = ?4, prev_hash = ?5, prev_until_ms = ?6",
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
    pub fn apis(&self) -> Result<Vec<(String, Timestamp, String)>, StoreError> {
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
            let created = created
                .parse::<Timestamp>()
                .unwrap_or_else(|_| Timestamp::now());
            out.push((name, created, ops));
        }
        Ok(out)
    }

    pub fn put_api(
        &self,
        name: &str,
        created_at: Timestamp,
        public_ops: &str,
    ) -> Result<(), StoreError> {
        self.conn.execute(
            "INSERT INTO apis (name, created_at, public_ops) VALUES (?1, ?2, ?3)
             ON CONFLICT(name) DO UPDATE SET public_ops = ?3",
            params![name, crate::model::rfc3339(created_at), public_ops],
        )?;
        Ok(())
    }

    /// Every entry, with the length of its stored document.
    pub fn entries(&self) -> Result<Vec<(String, String, Entry, usize)>, StoreError> {
        let rows: Vec<(String, String, String, String)> = {
            let mut stmt = self.conn.prepare("SELECT env, api, id, doc FROM entries")?;
            let rows = stmt.query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?)))?;
            rows.collect::<Result<_, _>>()?
        };
        let mut out = Vec::new();
        for (env, api, id, doc) in rows {
            let what = format!("{env}/{api}/{id}");
            if let Some(entry) = self
                .decode_or_quarantine("entries", &what, &doc, |s| s.delete_entry(&env, &api, &id))?
            {
                out.push((env, api, entry, doc.len()));
            }
        }
        Ok(out)
    }

    /// Stores an entry as `doc`, its JSON ([`entry_document`]).
    pub fn put_entry(&self, env: &str, api: &str, id: &str, doc: &str) -> Result<(), StoreError> {
        self.conn.execute(
            "INSERT INTO entries (env, api, id, doc) VALUES (?1, ?2, ?3, ?4)
             ON CONFLICT(env, api, id) DO UPDATE SET doc = ?4",
            params![env, api, id, doc],
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
        match v {
            None => Ok(None),
            Some(raw) => self.decode_or_quarantine("settings", name, &raw, |s| {
                s.conn
                    .execute("DELETE FROM settings WHERE name = ?1", [name])?;
                Ok(())
            }),
        }
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
        let rows: Vec<(String, String)> = {
            let mut stmt = self
                .conn
                .prepare(&format!("SELECT name, doc FROM {}", table.name()))?;
            let rows = stmt.query_map([], |r| Ok((r.get(0)?, r.get(1)?)))?;
            rows.collect::<Result<_, _>>()?
        };
        let mut out = Vec::new();
        for (name, doc) in rows {
            if let Some(d) = self
                .decode_or_quarantine(table.name(), &name, &doc, |s| s.delete_doc(table, &name))?
            {
                out.push(d);
            }
        }
        Ok(out)
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
