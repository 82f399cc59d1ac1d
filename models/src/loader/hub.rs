//! Hugging Face hub ids (`org/name`): resolved from the local Hugging Face cache only.
//!
//! ember never downloads from the hub (these machines cannot reach it); a model that someone already
//! downloaded with `huggingface-cli download`, `hf_hub_download`, vLLM or transformers sits in the
//! standard cache layout (`<cache>/models--org--name/{refs,snapshots}/…`), which hf-hub's [`Cache`]
//! reads. The snapshot directory looks exactly like a local Hugging Face model directory
//! (config.json, *.safetensors, tokenizer.json), so the caller loads it as one.

use std::path::{Path, PathBuf};

use hf_hub::{Cache, Repo, RepoType};

use crate::{Error, Result};

/// Does `s` look like a hub repo id (`org/name`) rather than a local path?
///
/// True for exactly two non-empty components of `[A-Za-z0-9._-]` that do not start with `.` and
/// when `s` is not an existing file or directory.
pub fn looks_like_hub_id(s: &str) -> bool {
    let mut parts = s.split('/');
    let (Some(org), Some(name), None) = (parts.next(), parts.next(), parts.next()) else {
        return false;
    };
    let valid = |p: &str| {
        !p.is_empty()
            && !p.starts_with('.')
            && !p.starts_with('-')
            && !p.contains("..")
            && p.chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
    };
    valid(org)
        && valid(name)
        && !name.to_ascii_lowercase().ends_with(".gguf")
        && !Path::new(s).exists()
}

/// The Hugging Face hub cache directory: `$HF_HUB_CACHE`, else `$HF_HOME/hub`, else
/// `~/.cache/huggingface/hub` (the same rules as huggingface_hub).
pub fn hf_cache_dir() -> PathBuf {
    hf_cache().path().clone()
}

fn hf_cache() -> Cache {
    if let Some(dir) = std::env::var_os("HF_HUB_CACHE").filter(|v| !v.is_empty()) {
        return Cache::new(PathBuf::from(dir));
    }
    if std::env::var_os("HF_HOME").is_some_and(|v| !v.is_empty()) {
        return Cache::from_env();
    }
    match std::env::var_os("HOME").filter(|v| !v.is_empty()) {
        Some(home) => Cache::new(PathBuf::from(home).join(".cache/huggingface/hub")),
        // hf-hub's default looks the home directory up some other way.
        None => Cache::from_env(),
    }
}

/// Find `repo_id` (at `revision`, default `main`) in the local Hugging Face cache and return its
/// snapshot directory, which holds config.json and safetensors weights.
pub fn resolve_hub_model(repo_id: &str, revision: Option<&str>) -> Result<PathBuf> {
    resolve_hub_model_in(&hf_cache_dir(), repo_id, revision)
}

/// [`resolve_hub_model`] with an explicit cache directory (the `hub` directory itself).
pub fn resolve_hub_model_in(
    cache_dir: &Path,
    repo_id: &str,
    revision: Option<&str>,
) -> Result<PathBuf> {
    let rev = revision.unwrap_or("main");
    let cache = Cache::new(cache_dir.to_path_buf());
    let repo = Repo::with_revision(repo_id.to_owned(), RepoType::Model, rev.to_owned());
    let folder = cache_dir.join(repo.folder_name());
    let cache_repo = cache.repo(repo);

    let mut candidates: Vec<PathBuf> = Vec::new();
    // A branch or tag: refs/<rev> holds the commit hash.
    if let Some(config) = cache_repo.get("config.json") {
        if let Some(snapshot) = config.parent() {
            candidates.push(snapshot.to_path_buf());
        }
    }
    // A commit hash given directly.
    candidates.push(cache_repo.pointer_path(rev));
    // No ref for the default branch (e.g. files copied in by hand): newest complete snapshot.
    if revision.is_none() {
        let mut snapshots: Vec<(std::time::SystemTime, PathBuf)> =
            std::fs::read_dir(folder.join("snapshots"))
                .map(|it| {
                    it.flatten()
                        .filter(|e| e.path().is_dir())
                        .map(|e| {
                            let modified = e
                                .metadata()
                                .and_then(|m| m.modified())
                                .unwrap_or(std::time::UNIX_EPOCH);
                            (modified, e.path())
                        })
                        .collect()
                })
                .unwrap_or_default();
        snapshots.sort_by_key(|s| std::cmp::Reverse(s.0));
        candidates.extend(snapshots.into_iter().map(|(_, p)| p));
    }

    for snapshot in candidates {
        if is_complete_snapshot(&snapshot) {
            tracing::info!(repo_id, revision = rev, path = %snapshot.display(), "using cached Hugging Face model");
            return Ok(snapshot);
        }
    }

    Err(Error::NotFound(format!(
        "Hugging Face model `{repo_id}` (revision `{rev}`) is not in the local Hugging Face cache: \
         searched {} for a snapshot with config.json and safetensors weights (model.safetensors, or \
         model.safetensors.index.json with all its shards, or *.safetensors). ember does not download \
         from the hub; set HF_HOME or HF_HUB_CACHE if your cache lives elsewhere, or pass a local \
         directory (config.json + *.safetensors + tokenizer.json), a GGUF file path, or a registry \
         alias ({})",
        folder.join("snapshots").display(),
        super::registry::aliases().join(", ")
    )))
}

/// config.json plus weights: every shard named by model.safetensors.index.json, else at least one
/// `*.safetensors` file. Broken symlinks (blobs not downloaded) do not count.
fn is_complete_snapshot(dir: &Path) -> bool {
    if !dir.join("config.json").is_file() {
        return false;
    }
    let index = dir.join("model.safetensors.index.json");
    if index.is_file() {
        let Ok(text) = std::fs::read_to_string(&index) else {
            return false;
        };
        let Ok(json) = serde_json::from_str::<serde_json::Value>(&text) else {
            return false;
        };
        let Some(map) = json.get("weight_map").and_then(|m| m.as_object()) else {
            return false;
        };
        return !map.is_empty()
            && map
                .values()
                .filter_map(|v| v.as_str())
                .all(|shard| dir.join(shard).is_file());
    }
    std::fs::read_dir(dir)
        .map(|it| {
            it.flatten().any(|e| {
                let path = e.path();
                path.extension().is_some_and(|x| x == "safetensors") && path.is_file()
            })
        })
        .unwrap_or(false)
}
