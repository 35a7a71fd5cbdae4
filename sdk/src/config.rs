//! The operator's configuration: key/value pairs from the pipeline spec.

use std::str::FromStr;

/// Configuration given to the function passed to [`export!`](crate::export).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Config {
    entries: Vec<(String, String)>,
}

impl Config {
    pub(crate) fn new(entries: Vec<(String, String)>) -> Config {
        Config { entries }
    }

    /// The value of `key` (the last one, if given more than once).
    pub fn get(&self, key: &str) -> Option<&str> {
        self.entries
            .iter()
            .rev()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
    }

    /// The value of `key`, or an error message naming it.
    pub fn require(&self, key: &str) -> Result<&str, String> {
        self.get(key)
            .ok_or_else(|| format!("missing required setting `{key}`"))
    }

    /// The value of `key` parsed as `T`, or `default` when absent; an error
    /// message names the key and the bad value.
    pub fn parse_or<T: FromStr>(&self, key: &str, default: T) -> Result<T, String>
    where
        T::Err: std::fmt::Display,
    {
        match self.get(key) {
            None => Ok(default),
            Some(raw) => raw
                .parse()
                .map_err(|e| format!("setting `{key}` = {raw:?}: {e}")),
        }
    }

    /// Every entry, in the order given.
    pub fn entries(&self) -> &[(String, String)] {
        &self.entries
    }
}
