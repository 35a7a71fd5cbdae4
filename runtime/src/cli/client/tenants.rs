//! `weir tenant` and `weir token`: the admin's commands (`/v1/tenants`):
//! create, list and delete tenants, issue and revoke their tokens.
//! An issued token is the tenancy's own [`IssuedToken`].

use clap::Subcommand;
use serde::Deserialize;
use serde_json::json;
use weir_tenancy::tenants::IssuedToken;

use super::table::table;
use super::{Client, Deleted, encode_path};

#[derive(Subcommand)]
pub enum TenantCommand {
    Create {
        name: String,
    },
    List,
    /// Delete a tenant and everything it owns.
    Delete {
        name: String,
    },
}

#[derive(Subcommand)]
pub enum TokenCommand {
    /// Issue a token for a tenant (printed once).
    Create { tenant: String },
    /// Revoke one of a tenant's tokens by its id.
    Revoke { tenant: String, id: String },
}

/// `GET /v1/tenants`' answer.
#[derive(Deserialize)]
struct Tenants {
    tenants: Vec<Tenant>,
}

/// A tenant as listed: `weir_tenancy::TenantInfo`, which does not read
/// back as sent (its `deleting` is left out when false), so the fields
/// shown are read here.
#[derive(Deserialize)]
struct Tenant {
    name: String,
    /// Ids of its live tokens.
    tokens: Vec<String>,
}

/// `DELETE /v1/tenants/{name}/tokens/{id}`'s answer.
#[derive(Deserialize)]
struct Revoked {
    revoked: String,
}

impl TenantCommand {
    pub fn run(self, client: &Client) -> anyhow::Result<()> {
        match self {
            TenantCommand::Create { name } => {
                let answer = client.post("/v1/tenants", &json!({ "name": name }))?;
                client.show(answer, |tenant: Tenant| {
                    println!("created tenant {}", tenant.name);
                })
            }
            TenantCommand::List => list(client),
            TenantCommand::Delete { name } => {
                let answer = client.delete(&format!("/v1/tenants/{}", encode_path(&name)))?;
                client.confirm(answer, |gone: Deleted| {
                    format!("deleted tenant {} and everything it owned", gone.deleted)
                })
            }
        }
    }
}

fn list(client: &Client) -> anyhow::Result<()> {
    let answer = client.get("/v1/tenants")?;
    client.show(answer, |list: Tenants| {
        let rows: Vec<Vec<String>> = list
            .tenants
            .iter()
            .map(|t| vec![t.name.clone(), t.tokens.join(",")])
            .collect();
        table(&["TENANT", "TOKENS"], &rows);
    })
}

impl TokenCommand {
    pub fn run(self, client: &Client) -> anyhow::Result<()> {
        match self {
            TokenCommand::Create { tenant } => {
                let path = format!("/v1/tenants/{}/tokens", encode_path(&tenant));
                let answer = client.post_empty(&path)?;
                client.show(answer, |issued: IssuedToken| {
                    eprintln!(
                        "token {} for tenant {} (shown only now; use it as WEIR_TOKEN):",
                        issued.id, issued.tenant
                    );
                    println!("{}", issued.token);
                })
            }
            TokenCommand::Revoke { tenant, id } => {
                let path = format!(
                    "/v1/tenants/{}/tokens/{}",
                    encode_path(&tenant),
                    encode_path(&id)
                );
                let answer = client.delete(&path)?;
                client.confirm(answer, |revoked: Revoked| {
                    format!("revoked token {} of tenant {tenant}", revoked.revoked)
                })
            }
        }
    }
}
