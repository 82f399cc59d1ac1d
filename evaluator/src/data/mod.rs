//! The local data cache: datasets converted once from pinned registry packages (see `fetch`) into
//! JSON-lines files under `$EMBER_HOME/data` (default `~/.cache/ember/data`).

pub mod arrow;
pub mod fetch;

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};

use serde_json::Value;

use crate::error::IoContext;
use crate::{Error, Result};

/// `$EMBER_HOME`, default `~/.cache/ember`.
pub fn ember_home() -> PathBuf {
    if let Some(h) = std::env::var_os("EMBER_HOME").filter(|h| !h.is_empty()) {
        return PathBuf::from(h);
    }
    let home = std::env::var_os("HOME")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("."));
    home.join(".cache").join("ember")
}

#[derive(Debug, Clone)]
pub struct DataStore {
    root: PathBuf,
}

impl DataStore {
    pub fn new(root: impl Into<PathBuf>) -> Self {
        Self { root: root.into() }
    }

    /// The store under `$EMBER_HOME/data`.
    pub fn default_location() -> Self {
        Self::new(ember_home().join("data"))
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    pub fn path(&self, rel: &str) -> PathBuf {
        self.root.join(rel)
    }

    /// Reads one converted file; a missing file names the fetch command that provides it.
    pub fn read_jsonl(&self, task: &str, rel: &str) -> Result<Vec<Value>> {
        let path = self.path(rel);
        if !path.exists() {
            return Err(Error::MissingData {
                task: task.to_string(),
                path,
                fetch: fetch::fetch_name(task).to_string(),
            });
        }
        read_jsonl_file(&path)
    }
}

/// Reads a JSON-lines file (blank lines skipped).
pub fn read_jsonl_file(path: &Path) -> Result<Vec<Value>> {
    let file = std::fs::File::open(path).io_context(|| format!("opening {}", path.display()))?;
    let mut out = Vec::new();
    for (i, line) in BufReader::new(file).lines().enumerate() {
        let line = line.io_context(|| format!("reading {}", path.display()))?;
        if line.trim().is_empty() {
            continue;
        }
        out.push(serde_json::from_str(&line).map_err(|e| Error::BadData {
            path: path.display().to_string(),
            message: format!("line {}: {e}", i + 1),
        })?);
    }
    Ok(out)
}

/// Writes JSON lines atomically (a temp file renamed into place), creating parent directories.
pub fn write_jsonl_file(path: &Path, rows: &[Value]) -> Result<()> {
    use std::io::Write;
    let dir = path.parent().unwrap_or(Path::new("."));
    std::fs::create_dir_all(dir).io_context(|| format!("creating {}", dir.display()))?;
    let mut tmp = tempfile::NamedTempFile::new_in(dir)
        .io_context(|| format!("writing in {}", dir.display()))?;
    {
        let mut w = std::io::BufWriter::new(tmp.as_file_mut());
        for row in rows {
            serde_json::to_writer(&mut w, row)?;
            w.write_all(b"\n")
                .io_context(|| format!("writing {}", path.display()))?;
        }
        w.flush()
            .io_context(|| format!("writing {}", path.display()))?;
    }
    tmp.persist(path).map_err(|e| Error::Io {
        context: format!("writing {}", path.display()),
        source: e.error,
    })?;
    Ok(())
}
