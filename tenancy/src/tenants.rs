//! Tenants and their credentials.
//!
//! The admin credential creates and deletes tenants and issues and revokes
//! their API tokens. It comes from the configuration, or the
//! `WEIR_ADMIN_TOKEN` environment variable; on a first start with
//! neither, one is generated and written to `<data>/admin-token` (mode
//! 0600). Tokens are random 256-bit secrets, shown once when issued and
//! stored only as SHA-256 hashes in the catalog document `tenants.json`
//! (on the embedded log `<data>/tenants.json`; on a cluster, in the
//! cluster, so that every worker accepts the same tokens: a worker reads
//! the document again before each change, when a token is unknown, and
//! every second while it [`follow`](Tenants::follow)s the others). A presented
//! token is hashed and compared with every stored hash in constant time,
//! so neither the comparison nor the lookup order leaks which bytes match.
//!
//! Long-lived sessions (Kafka connections) authenticate once and then hold
//! a [`Credential`]: which token of which incarnation of the tenant they
//! signed in with. Before each request they take a [`Lease`], which says
//! without hashing again whether that token still stands, and they watch
//! [`Tenants::revocations`] to end requests that wait (long-polls, group
//! joins) as soon as it is revoked. A tenant re-created under the same name
//! is a new incarnation: sessions of the old one never pass for it.
//! Deleting a tenant is two steps ([`Tenants::begin_delete`], then
//! [`Tenants::finish_delete`] once its resources are gone), so a deletion
//! cut short leaves the name taken until it is finished.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::Context;
use rand::RngCore;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

use super::Quotas;
use weir_core::format::Format;
use weir_core::now_ms;
use weir_log::Catalog;

/// Environment variable holding the admin credential.
pub const ADMIN_TOKEN_ENV: &str = "WEIR_ADMIN_TOKEN";
const ADMIN_TOKEN_FILE: &str = "admin-token";
/// The catalog document of the tenants.
const TENANTS_KEY: &str = "tenants.json";
/// How often an unknown token may make the tenants be read again.
const REREAD_AT_MOST_EVERY: Duration = Duration::from_millis(250);

/// Who is calling.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Caller {
    Admin,
    Tenant(String),
}

/// What can go wrong with tenants.
#[derive(Debug, thiserror::Error)]
pub enum TenancyError {
    #[error("{0}")]
    InvalidName(String),
    #[error("tenant {0:?} already exists")]
    Exists(String),
    #[error("tenant {0:?} is being deleted: delete it again to finish")]
    BeingDeleted(String),
    #[error("unknown tenant {0:?}")]
    UnknownTenant(String),
    #[error("tenant {tenant:?} has no token {id:?}")]
    UnknownToken { tenant: String, id: String },
    #[error(transparent)]
    Storage(#[from] anyhow::Error),
}

/// The tenants file's format.
const TENANTS_FORMAT: Format = Format {
    what: "the tenants file",
    current: 1,
    oldest: 1,
};

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
struct Stored {
    tenants: BTreeMap<String, TenantRecord>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
struct TenantRecord {
    created_ms: i64,
    tokens: Vec<TokenRecord>,
    /// Its own quotas; `None`: the server's defaults.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    quotas: Option<Quotas>,
    /// Its deletion has begun: its tokens are gone and the name stays
    /// taken until the deletion is finished.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    deleting: bool,
    /// This life of the tenant (not stored: each start and each
    /// re-creation makes a new one).
    #[serde(skip)]
    incarnation: Incarnation,
}

/// One life of a tenant, from its creation (or the server's start) to its
/// deletion. Requests of its sessions hold it shared while they run
/// ([`Lease`]); deletion takes it whole once, to wait for them to end.
#[derive(Debug, Clone, Default)]
struct Incarnation(Arc<tokio::sync::RwLock<()>>);

impl Incarnation {
    fn is(&self, other: &Incarnation) -> bool {
        Arc::ptr_eq(&self.0, &other.0)
    }
}

/// A tenant token as a long-lived session holds it: which token, of which
/// incarnation of which tenant.
#[derive(Debug, Clone)]
pub struct Credential {
    tenant: String,
    token_id: String,
    incarnation: Incarnation,
}

impl Credential {
    pub fn tenant(&self) -> &str {
        &self.tenant
    }
}

/// Who a token belongs to, as a session signing in learns it.
#[derive(Debug, Clone)]
pub enum Identity {
    Admin,
    Tenant(Credential),
}

/// A request of a session in flight, under a credential that stood when
/// the request began: the tenant's deletion waits until it is dropped.
#[derive(Debug)]
pub struct Lease {
    _held: tokio::sync::OwnedRwLockReadGuard<()>,
}

/// A tenant whose deletion has begun: its tokens no longer work.
pub struct Departing {
    name: String,
    incarnation: Incarnation,
}

impl Departing {
    /// Waits until no request of the tenant's sessions is in flight. New
    /// ones are refused already, and those that wait were woken by the
    /// revocation, so this is the time of the longest request being handled.
    pub async fn requests_finished(&self) {
        drop(self.incarnation.0.write().await);
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
struct TokenRecord {
    id: String,
    /// SHA-256 of the token, hex.
    hash: String,
    created_ms: i64,
}

/// A tenant as listed.
#[derive(Debug, Clone, Serialize)]
pub struct TenantInfo {
    pub name: String,
    pub created_ms: i64,
    /// Ids of its live tokens (the secrets are never shown again).
    pub tokens: Vec<String>,
    /// Its own quotas, if it does not use the defaults.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub quotas: Option<Quotas>,
    /// Its deletion began and is not finished (delete it again).
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub deleting: bool,
}

/// A newly issued token: the only time its secret is seen.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct IssuedToken {
    pub tenant: String,
    pub id: String,
    pub token: String,
}

/// The server's tenants.
pub struct Tenants {
    catalog: Arc<dyn Catalog>,
    admin_hash: [u8; 32],
    stored: Mutex<Stored>,
    /// Serializes this process's changes (each reads, changes, writes).
    changing: tokio::sync::Mutex<()>,
    /// When an unknown token last made the tenants be read again.
    reread_for_token_at: Mutex<Option<Instant>>,
    /// Counts revocations (tokens revoked, deletions begun), so sessions
    /// can wake and check their credential.
    revocations: tokio::sync::watch::Sender<u64>,
}

fn hash(token: &str) -> [u8; 32] {
    Sha256::digest(token.as_bytes()).into()
}

fn random_hex(bytes: usize) -> String {
    let mut buf = vec![0u8; bytes];
    rand::rng().fill_bytes(&mut buf);
    hex::encode(buf)
}

impl Tenants {
    /// Opens the tenants kept in `catalog`. The admin credential is
    /// `admin` when given (config or environment); otherwise the one in
    /// `<data_dir>/admin-token`, generated on first start. Returns the
    /// path of that file when it is the credential in use.
    pub async fn open(
        catalog: Arc<dyn Catalog>,
        data_dir: &Path,
        admin: Option<String>,
    ) -> anyhow::Result<(Tenants, Option<PathBuf>)> {
        let stored = read(&*catalog).await?;
        let (admin, file) = match admin.filter(|t| !t.is_empty()) {
            Some(token) => (token, None),
            None => {
                let file = data_dir.join(ADMIN_TOKEN_FILE);
                (admin_token_file(&file)?, Some(file))
            }
        };
        let tenants = Tenants {
            catalog,
            admin_hash: hash(&admin),
            stored: Mutex::new(stored),
            changing: tokio::sync::Mutex::new(()),
            reread_for_token_at: Mutex::new(None),
            revocations: tokio::sync::watch::Sender::new(0),
        };
        Ok((tenants, file))
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Stored> {
        self.stored.lock().unwrap_or_else(|e| e.into_inner())
    }

    async fn save(&self, stored: &Stored) -> anyhow::Result<()> {
        self.catalog
            .put_document(TENANTS_KEY, TENANTS_FORMAT.to_json(stored).into())
            .await
            .context("while storing the tenants")
    }

    /// Reads the tenants again (other workers may have changed them): a
    /// tenant of the same creation keeps its incarnation, so its sessions
    /// stand; a token or tenant gone is a revocation.
    pub async fn reread(&self) -> anyhow::Result<()> {
        let mut fresh = read(&*self.catalog).await?;
        let mut revoked = false;
        {
            let mut stored = self.lock();
            for (name, old) in &stored.tenants {
                match fresh.tenants.get_mut(name) {
                    Some(new) if new.created_ms == old.created_ms => {
                        new.incarnation = old.incarnation.clone();
                        revoked |= old
                            .tokens
                            .iter()
                            .any(|t| !new.tokens.iter().any(|n| n.id == t.id));
                    }
                    _ => revoked = true,
                }
            }
            *stored = fresh;
        }
        if revoked {
            self.revoked();
        }
        Ok(())
    }

    /// Reads the tenants again every `every`, until the process ends: for
    /// workers sharing a cluster, so that a token revoked elsewhere stops
    /// working here within that time.
    pub async fn follow(self: Arc<Self>, every: Duration) {
        loop {
            tokio::time::sleep(every).await;
            if let Err(e) = self.reread().await {
                tracing::warn!(error = %format!("{e:#}"), "could not read the tenants again");
            }
        }
    }

    /// Like [`identify`](Self::identify), reading the tenants again first
    /// when the token is unknown (issued on another worker, perhaps), at
    /// most every 250 ms.
    pub async fn identify_fresh(&self, token: &str) -> Option<Identity> {
        if let Some(identity) = self.identify(token) {
            return Some(identity);
        }
        let due = {
            let mut last = self
                .reread_for_token_at
                .lock()
                .unwrap_or_else(|e| e.into_inner());
            let due = last.is_none_or(|at| at.elapsed() >= REREAD_AT_MOST_EVERY);
            if due {
                *last = Some(Instant::now());
            }
            due
        };
        if due && let Err(e) = self.reread().await {
            tracing::warn!(error = %format!("{e:#}"), "could not read the tenants again");
        }
        self.identify(token)
    }

    /// Who a token belongs to, if anyone, with the credential a session
    /// keeps.
    pub fn identify(&self, token: &str) -> Option<Identity> {
        let presented = hash(token);
        let mut found = None;
        // Every hash is compared, whatever matches, in constant time.
        let is_admin: bool = presented.ct_eq(&self.admin_hash).into();
        if is_admin {
            found = Some(Identity::Admin);
        }
        for (name, tenant) in &self.lock().tenants {
            for stored in &tenant.tokens {
                let Ok(bytes) = hex::decode(&stored.hash) else {
                    continue;
                };
                let matches: bool = presented.as_slice().ct_eq(&bytes).into();
                if matches {
                    found = Some(Identity::Tenant(Credential {
                        tenant: name.clone(),
                        token_id: stored.id.clone(),
                        incarnation: tenant.incarnation.clone(),
                    }));
                }
            }
        }
        found
    }

    /// Whether a session's credential still stands: its token not revoked,
    /// its tenant not deleted (nor deleted and created again).
    pub fn is_valid(&self, credential: &Credential) -> bool {
        self.lock()
            .tenants
            .get(&credential.tenant)
            .is_some_and(|record| {
                record.incarnation.is(&credential.incarnation)
                    && record.tokens.iter().any(|t| t.id == credential.token_id)
            })
    }

    /// Holds the credential's tenant for one request, if the credential
    /// still stands (`None`: it was revoked).
    pub async fn lease(&self, credential: &Credential) -> Option<Lease> {
        let guard = credential.incarnation.0.clone().read_owned().await;
        // Checked once the lease is held: a deletion that began before
        // cannot miss this request, one that begins after waits for it.
        self.is_valid(credential).then_some(Lease { _held: guard })
    }

    /// Changes whenever a token is revoked or a tenant's deletion begins.
    pub fn revocations(&self) -> tokio::sync::watch::Receiver<u64> {
        self.revocations.subscribe()
    }

    fn revoked(&self) {
        self.revocations.send_modify(|count| *count += 1);
    }

    pub fn exists(&self, name: &str) -> bool {
        self.lock().tenants.contains_key(name)
    }

    pub async fn create(
        &self,
        name: &str,
        quotas: Option<Quotas>,
    ) -> Result<TenantInfo, TenancyError> {
        weir_core::names::check_tenant_name(name).map_err(TenancyError::InvalidName)?;
        let _changing = self.changing.lock().await;
        self.reread().await?;
        let mut updated = self.lock().clone();
        match updated.tenants.get(name) {
            Some(record) if record.deleting => {
                return Err(TenancyError::BeingDeleted(name.to_string()));
            }
            Some(_) => return Err(TenancyError::Exists(name.to_string())),
            None => {}
        }
        let record = TenantRecord {
            created_ms: now_ms(),
            tokens: Vec::new(),
            quotas,
            deleting: false,
            incarnation: Incarnation::default(),
        };
        updated.tenants.insert(name.to_string(), record);
        self.save(&updated).await?;
        let info = info(name, &updated.tenants[name]);
        *self.lock() = updated;
        Ok(info)
    }

    pub fn list(&self) -> Vec<TenantInfo> {
        self.lock()
            .tenants
            .iter()
            .map(|(name, record)| info(name, record))
            .collect()
    }

    /// A tenant's own quotas (`None`: it uses the defaults, or is unknown).
    pub fn quotas(&self, name: &str) -> Option<Quotas> {
        self.lock().tenants.get(name).and_then(|r| r.quotas)
    }

    pub fn get(&self, name: &str) -> Option<TenantInfo> {
        self.lock().tenants.get(name).map(|r| info(name, r))
    }

    /// Begins deleting a tenant: its tokens are dropped (sessions using
    /// them are told through [`revocations`](Self::revocations)) and its
    /// name stays taken until [`finish_delete`](Self::finish_delete).
    /// Beginning again a deletion begun before is how it is resumed.
    pub async fn begin_delete(&self, name: &str) -> Result<Departing, TenancyError> {
        let incarnation = self
            .change_record(name, |record| {
                record.tokens.clear();
                record.deleting = true;
                Ok(record.incarnation.clone())
            })
            .await?;
        self.revoked();
        Ok(Departing {
            name: name.to_string(),
            incarnation,
        })
    }

    /// Forgets a tenant whose resources are gone.
    pub async fn finish_delete(&self, departing: Departing) -> Result<(), TenancyError> {
        let _changing = self.changing.lock().await;
        self.reread().await?;
        let mut updated = self.lock().clone();
        let gone = updated
            .tenants
            .remove(&departing.name)
            .is_some_and(|record| record.incarnation.is(&departing.incarnation));
        if !gone {
            return Err(TenancyError::UnknownTenant(departing.name));
        }
        self.save(&updated).await?;
        *self.lock() = updated;
        Ok(())
    }

    /// Issues a new token for a tenant.
    pub async fn issue_token(&self, tenant: &str) -> Result<IssuedToken, TenancyError> {
        let issued = self.change_record(tenant, |record| {
            if record.deleting {
                return Err(TenancyError::BeingDeleted(tenant.to_string()));
            }
            let token = format!("weir_{}", random_hex(32));
            let id = random_hex(6);
            record.tokens.push(TokenRecord {
                id: id.clone(),
                hash: hex::encode(hash(&token)),
                created_ms: now_ms(),
            });
            Ok((token, id))
        });
        let (token, id) = issued.await?;
        Ok(IssuedToken {
            tenant: tenant.to_string(),
            id,
            token,
        })
    }

    /// Revokes a tenant's token: it stops working at once.
    pub async fn revoke_token(&self, tenant: &str, id: &str) -> Result<(), TenancyError> {
        self.change_record(tenant, |record| {
            let before = record.tokens.len();
            record.tokens.retain(|t| t.id != id);
            if record.tokens.len() == before {
                return Err(TenancyError::UnknownToken {
                    tenant: tenant.to_string(),
                    id: id.to_string(),
                });
            }
            Ok(())
        })
        .await?;
        self.revoked();
        Ok(())
    }

    /// Changes a tenant's record, as last stored, and saves the tenants:
    /// the change is kept only once it is durable, and not at all when
    /// `change` or the save fails.
    async fn change_record<T>(
        &self,
        tenant: &str,
        change: impl FnOnce(&mut TenantRecord) -> Result<T, TenancyError>,
    ) -> Result<T, TenancyError> {
        let _changing = self.changing.lock().await;
        self.reread().await?;
        let mut updated = self.lock().clone();
        let record = updated
            .tenants
            .get_mut(tenant)
            .ok_or_else(|| TenancyError::UnknownTenant(tenant.to_string()))?;
        let changed = change(record)?;
        self.save(&updated).await?;
        *self.lock() = updated;
        Ok(changed)
    }
}

/// The tenants as stored in `catalog` (none yet: no tenants).
async fn read(catalog: &dyn Catalog) -> anyhow::Result<Stored> {
    match catalog
        .document(TENANTS_KEY)
        .await
        .context("while reading the tenants")?
    {
        Some(bytes) => TENANTS_FORMAT
            .from_json(&bytes)
            .with_context(|| format!("while reading {TENANTS_KEY}")),
        None => Ok(Stored::default()),
    }
}

fn info(name: &str, record: &TenantRecord) -> TenantInfo {
    TenantInfo {
        name: name.to_string(),
        created_ms: record.created_ms,
        tokens: record.tokens.iter().map(|t| t.id.clone()).collect(),
        quotas: record.quotas,
        deleting: record.deleting,
    }
}

/// The admin token kept in `file`, generated (mode 0600) if there is none.
fn admin_token_file(file: &Path) -> anyhow::Result<String> {
    match std::fs::read_to_string(file) {
        Ok(token) if !token.trim().is_empty() => return Ok(token.trim().to_string()),
        Ok(_) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(e).with_context(|| format!("while reading {}", file.display())),
    }
    let token = format!("weir_admin_{}", random_hex(32));
    write_private(file, &format!("{token}\n"))?;
    Ok(token)
}

/// Writes a file only its owner can read (created with mode 0600).
fn write_private(file: &Path, text: &str) -> anyhow::Result<()> {
    use std::io::Write;
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    let mut out = options
        .open(file)
        .with_context(|| format!("while creating {}", file.display()))?;
    out.write_all(text.as_bytes())
        .and_then(|()| out.sync_all())
        .with_context(|| format!("while writing {}", file.display()))
}

#[cfg(test)]
mod tests;
