//! (stub until the hub lookup lands)
use std::path::PathBuf;

use crate::{Error, Result};

pub fn looks_like_hub_id(_s: &str) -> bool {
    false
}
pub fn resolve_hub_model(repo_id: &str, _revision: Option<&str>) -> Result<PathBuf> {
    Err(Error::NotFound(repo_id.to_string()))
}
