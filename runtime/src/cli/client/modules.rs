//! `weir module`: upload operator modules and list them (`/v1/modules`).
//! Versions are the module store's own [`ModuleVersion`].

use std::path::{Path, PathBuf};

use anyhow::Context;
use clap::Subcommand;
use serde::Deserialize;
use weir_pipeline::modules::ModuleVersion;

use super::table::{cell, table};
use super::{Client, encode_path};

#[derive(Subcommand)]
pub enum ModuleCommand {
    /// Upload a module (a new version of NAME).
    Push {
        name: String,
        file: PathBuf,
    },
    List,
}

/// `PUT /v1/modules/{name}`'s answer (its `name` and `size` are not
/// shown).
#[derive(Deserialize)]
struct Pushed {
    version: u32,
    /// SHA-256 of the bytes, in hex.
    digest: String,
    /// Whether the bytes made a new version (or were the newest's again).
    new: bool,
}

/// `GET /v1/modules`' answer.
#[derive(Deserialize)]
struct Modules {
    modules: Vec<Module>,
}

/// A module and its versions, oldest first.
#[derive(Deserialize)]
struct Module {
    name: String,
    latest: Option<ModuleVersion>,
    versions: Vec<ModuleVersion>,
}

impl ModuleCommand {
    pub fn run(self, client: &Client) -> anyhow::Result<()> {
        match self {
            ModuleCommand::Push { name, file } => push(client, &name, &file),
            ModuleCommand::List => list(client),
        }
    }
}

fn push(client: &Client, name: &str, file: &Path) -> anyhow::Result<()> {
    let bytes = std::fs::read(file).with_context(|| format!("while reading {}", file.display()))?;
    let answer = client.put_wasm(&format!("/v1/modules/{}", encode_path(name)), &bytes)?;
    client.show(answer, |pushed: Pushed| {
        if pushed.new {
            println!(
                "pushed module {name} version {} (sha256 {})",
                pushed.version, pushed.digest
            );
        } else {
            println!(
                "module {name} version {} already has these bytes",
                pushed.version
            );
        }
    })
}

fn list(client: &Client) -> anyhow::Result<()> {
    let answer = client.get("/v1/modules")?;
    client.show(answer, |list: Modules| {
        let rows: Vec<Vec<String>> = list
            .modules
            .iter()
            .map(|m| {
                let latest = m.latest.as_ref();
                vec![
                    m.name.clone(),
                    cell(&latest.map(|v| v.version)),
                    m.versions.len().to_string(),
                    cell(&latest.map(|v| v.size)),
                    cell(&latest.map(|v| &v.digest)).chars().take(12).collect(),
                ]
            })
            .collect();
        table(&["MODULE", "LATEST", "VERSIONS", "BYTES", "DIGEST"], &rows);
    })
}
