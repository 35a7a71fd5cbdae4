//! Tenants and their credentials.
//!
//! The admin credential creates and deletes tenants and issues and revokes
//! their API tokens. It comes from the configuration, or the
//! `WEIR_ADMIN_TOKEN` environment variable; on a first start with
//! neither, one is generated and written to `<data>/admin-token` (mode
//! 0600). Tokens are random 256-bit secrets, shown once when issued and
//! stored only as SHA-256 hashes in `<data>/tenants.json`. A presented
//! token is hashed and compared with every stored hash in constant time,
//! so neither the comparison nor the lookup order leaks which bytes match.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use anyhow::Context;
use rand::RngCore;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

use super::Quotas;
use crate::files::write_durably;
use crate::modules::now_ms;

/// Environment variable holding the admin credential.
pub const ADMIN_TOKEN_ENV: &str = "WEIR_ADMIN_TOKEN";
const ADMIN_TOKEN_FILE: &str = "admin-token";
const TENANTS_FILE: &str = "tenants.json";

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
    #[error("unknown tenant {0:?}")]
    UnknownTenant(String),
    #[error("tenant {tenant:?} has no token {id:?}")]
    UnknownToken { tenant: String, id: String },
    #[error(transparent)]
    Storage(#[from] anyhow::Error),
}

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
}

/// A newly issued token: the only time its secret is seen.
#[derive(Debug, Clone, Serialize)]
pub struct IssuedToken {
    pub tenant: String,
    pub id: String,
    pub token: String,
}

/// The server's tenants.
pub struct Tenants {
    path: PathBuf,
    admin_hash: [u8; 32],
    stored: Mutex<Stored>,
}

/// Checks a tenant name: 1 to 32 characters of `[a-z0-9-]`, starting with
/// a letter or digit (it prefixes its resources' names, so no dots).
pub fn check_tenant_name(name: &str) -> Result<(), String> {
    let valid = (1..=32).contains(&name.len())
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        && !name.starts_with('-');
    if valid {
        Ok(())
    } else {
        Err(format!(
            "tenant name {:?} must be 1 to 32 characters of a-z, 0-9 and '-', not starting with '-'",
            name.chars().take(40).collect::<String>()
        ))
    }
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
    /// Opens the tenants of `data_dir`. The admin credential is `admin`
    /// when given (config or environment); otherwise the one in
    /// `<data>/admin-token`, generated on first start. Returns the path of
    /// that file when it is the credential in use.
    pub fn open(
        data_dir: &Path,
        admin: Option<String>,
    ) -> anyhow::Result<(Tenants, Option<PathBuf>)> {
        let path = data_dir.join(TENANTS_FILE);
        let stored = match std::fs::read(&path) {
            Ok(bytes) => serde_json::from_slice(&bytes)
                .with_context(|| format!("while reading {}", path.display()))?,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Stored::default(),
            Err(e) => return Err(e).with_context(|| format!("while reading {}", path.display())),
        };
        let (admin, file) = match admin.filter(|t| !t.is_empty()) {
            Some(token) => (token, None),
            None => {
                let file = data_dir.join(ADMIN_TOKEN_FILE);
                (admin_token_file(&file)?, Some(file))
            }
        };
        let tenants = Tenants {
            path,
            admin_hash: hash(&admin),
            stored: Mutex::new(stored),
        };
        Ok((tenants, file))
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Stored> {
        self.stored.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn save(&self, stored: &Stored) -> anyhow::Result<()> {
        write_durably(
            &self.path,
            &serde_json::to_vec_pretty(stored).expect("tenants serialize"),
        )
    }

    /// Who a bearer token belongs to, if anyone.
    pub fn authenticate(&self, token: &str) -> Option<Caller> {
        let presented = hash(token);
        let mut found = None;
        // Every hash is compared, whatever matches, in constant time.
        let is_admin: bool = presented.ct_eq(&self.admin_hash).into();
        if is_admin {
            found = Some(Caller::Admin);
        }
        for (name, tenant) in &self.lock().tenants {
            for stored in &tenant.tokens {
                let Ok(bytes) = hex::decode(&stored.hash) else {
                    continue;
                };
                let matches: bool = presented.as_slice().ct_eq(&bytes).into();
                if matches {
                    found = Some(Caller::Tenant(name.clone()));
                }
            }
        }
        found
    }

    pub fn exists(&self, name: &str) -> bool {
        self.lock().tenants.contains_key(name)
    }

    pub fn create(&self, name: &str, quotas: Option<Quotas>) -> Result<TenantInfo, TenancyError> {
        check_tenant_name(name).map_err(TenancyError::InvalidName)?;
        let mut stored = self.lock();
        if stored.tenants.contains_key(name) {
            return Err(TenancyError::Exists(name.to_string()));
        }
        let mut updated = stored.clone();
        let record = TenantRecord {
            created_ms: now_ms(),
            tokens: Vec::new(),
            quotas,
        };
        updated.tenants.insert(name.to_string(), record);
        self.save(&updated)?;
        *stored = updated;
        Ok(info(name, &stored.tenants[name]))
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

    /// Forgets a tenant and its tokens (its resources are the caller's to delete).
    pub fn delete(&self, name: &str) -> Result<(), TenancyError> {
        let mut stored = self.lock();
        let mut updated = stored.clone();
        if updated.tenants.remove(name).is_none() {
            return Err(TenancyError::UnknownTenant(name.to_string()));
        }
        self.save(&updated)?;
        *stored = updated;
        Ok(())
    }

    /// Issues a new token for a tenant.
    pub fn issue_token(&self, tenant: &str) -> Result<IssuedToken, TenancyError> {
        let mut stored = self.lock();
        let mut updated = stored.clone();
        let record = updated
            .tenants
            .get_mut(tenant)
            .ok_or_else(|| TenancyError::UnknownTenant(tenant.to_string()))?;
        let token = format!("weir_{}", random_hex(32));
        let id = random_hex(6);
        record.tokens.push(TokenRecord {
            id: id.clone(),
            hash: hex::encode(hash(&token)),
            created_ms: now_ms(),
        });
        self.save(&updated)?;
        *stored = updated;
        Ok(IssuedToken {
            tenant: tenant.to_string(),
            id,
            token,
        })
    }

    /// Revokes a tenant's token: it stops working at once.
    pub fn revoke_token(&self, tenant: &str, id: &str) -> Result<(), TenancyError> {
        let mut stored = self.lock();
        let mut updated = stored.clone();
        let record = updated
            .tenants
            .get_mut(tenant)
            .ok_or_else(|| TenancyError::UnknownTenant(tenant.to_string()))?;
        let before = record.tokens.len();
        record.tokens.retain(|t| t.id != id);
        if record.tokens.len() == before {
            return Err(TenancyError::UnknownToken {
                tenant: tenant.to_string(),
                id: id.to_string(),
            });
        }
        self.save(&updated)?;
        *stored = updated;
        Ok(())
    }
}

fn info(name: &str, record: &TenantRecord) -> TenantInfo {
    TenantInfo {
        name: name.to_string(),
        created_ms: record.created_ms,
        tokens: record.tokens.iter().map(|t| t.id.clone()).collect(),
        quotas: record.quotas,
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
mod tests {
    use super::*;

    #[test]
    fn tokens_authenticate_until_revoked_and_survive_a_reopen() {
        let dir = tempfile::tempdir().unwrap();
        let (tenants, file) = Tenants::open(dir.path(), Some("root".into())).unwrap();
        assert!(file.is_none());
        assert_eq!(tenants.authenticate("root"), Some(Caller::Admin));
        tenants.create("acme", None).unwrap();
        let issued = tenants.issue_token("acme").unwrap();
        assert_eq!(
            tenants.authenticate(&issued.token),
            Some(Caller::Tenant("acme".into()))
        );
        assert_eq!(tenants.authenticate("weir_nope"), None);
        let stored = std::fs::read_to_string(dir.path().join(TENANTS_FILE)).unwrap();
        assert!(!stored.contains(&issued.token), "only the hash is stored");

        let (reopened, _) = Tenants::open(dir.path(), Some("root".into())).unwrap();
        assert_eq!(
            reopened.authenticate(&issued.token),
            Some(Caller::Tenant("acme".into()))
        );
        reopened.revoke_token("acme", &issued.id).unwrap();
        assert_eq!(reopened.authenticate(&issued.token), None);
        assert!(matches!(
            reopened.create("acme", None),
            Err(TenancyError::Exists(_))
        ));
        assert!(reopened.create("Bad.Name", None).is_err());
    }

    #[test]
    fn a_generated_admin_token_is_private_and_kept() {
        let dir = tempfile::tempdir().unwrap();
        let (tenants, file) = Tenants::open(dir.path(), None).unwrap();
        let file = file.expect("generated");
        let token = std::fs::read_to_string(&file).unwrap();
        assert_eq!(tenants.authenticate(token.trim()), Some(Caller::Admin));
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(&file).unwrap().permissions().mode();
            assert_eq!(mode & 0o777, 0o600);
        }
        let (again, _) = Tenants::open(dir.path(), None).unwrap();
        assert_eq!(again.authenticate(token.trim()), Some(Caller::Admin));
    }
}
