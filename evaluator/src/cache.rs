//! `--use-cache DB`: responses stored in SQLite keyed by the request and the model's identity, so a
//! re-run answers every request from the database and makes no model calls.

use std::path::Path;

use rusqlite::{params, Connection, OptionalExtension};
use sha2::{Digest, Sha256};

use crate::request::{Request, Response};
use crate::Result;

pub struct Cache {
    conn: Connection,
}

pub fn sha256_hex(bytes: &[u8]) -> String {
    Sha256::digest(bytes)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// The cache key of a request for a model identity.
pub fn request_key(identity: &str, request: &Request) -> String {
    let body = serde_json::to_string(request).unwrap_or_default();
    sha256_hex(format!("{identity}\u{0}{body}").as_bytes())
}

impl Cache {
    pub fn open(path: &Path) -> Result<Self> {
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir).map_err(|source| crate::Error::Io {
                context: format!("creating {}", dir.display()),
                source,
            })?;
        }
        let conn = Connection::open(path)?;
        conn.execute_batch(
            "PRAGMA journal_mode=WAL;
             CREATE TABLE IF NOT EXISTS responses (key TEXT PRIMARY KEY, response TEXT NOT NULL);",
        )?;
        Ok(Self { conn })
    }

    pub fn get_many(&self, keys: &[String]) -> Result<Vec<Option<Response>>> {
        let mut stmt = self
            .conn
            .prepare_cached("SELECT response FROM responses WHERE key = ?1")?;
        keys.iter()
            .map(|k| {
                let text: Option<String> = stmt.query_row(params![k], |r| r.get(0)).optional()?;
                Ok(text.and_then(|t| serde_json::from_str(&t).ok()))
            })
            .collect()
    }

    pub fn put_many(&self, entries: &[(&str, &Response)]) -> Result<()> {
        let tx = self.conn.unchecked_transaction()?;
        {
            let mut stmt = tx.prepare_cached(
                "INSERT OR REPLACE INTO responses (key, response) VALUES (?1, ?2)",
            )?;
            for (k, r) in entries {
                stmt.execute(params![k, serde_json::to_string(r)?])?;
            }
        }
        tx.commit()?;
        Ok(())
    }

    pub fn len(&self) -> Result<usize> {
        Ok(self
            .conn
            .query_row("SELECT COUNT(*) FROM responses", [], |r| r.get::<_, i64>(0))?
            as usize)
    }

    pub fn is_empty(&self) -> Result<bool> {
        Ok(self.len()? == 0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip() {
        let dir = tempfile::tempdir().unwrap();
        let c = Cache::open(&dir.path().join("c.db")).unwrap();
        let req = Request::loglikelihood("a", " b");
        let k = request_key("m", &req);
        assert_ne!(k, request_key("other-model", &req));
        let resp = Response::Loglikelihood {
            logprob: -1.5,
            is_greedy: true,
            token_logprobs: vec![-1.0, -0.5],
        };
        assert_eq!(c.get_many(std::slice::from_ref(&k)).unwrap(), vec![None]);
        c.put_many(&[(&k, &resp)]).unwrap();
        assert_eq!(c.get_many(&[k]).unwrap(), vec![Some(resp)]);
        assert_eq!(c.len().unwrap(), 1);
    }
}
