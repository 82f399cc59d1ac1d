//! (stub until the registry lands)
use std::path::PathBuf;

use crate::{Error, Result};

pub struct RegistryModel;

pub fn lookup(_alias: &str) -> Option<&'static RegistryModel> {
    None
}
pub fn aliases() -> impl Iterator<Item = &'static str> {
    std::iter::empty()
}
pub fn fetch(alias: &str) -> Result<PathBuf> {
    Err(Error::NotFound(alias.to_string()))
}
