//! Tenants and tokens on disk: files from a newer version refused, tokens that
//! authenticate until revoked and across a reopen, the generated admin token,
//! credentials lapsing with their token or their tenant's life, and deletions
//! cut short.

use super::*;
use weir_log::DirCatalog;

/// The tenants of a data directory, as a server on the embedded log keeps them.
async fn open(dir: &Path, admin: Option<String>) -> anyhow::Result<(Tenants, Option<PathBuf>)> {
    Tenants::open(Arc::new(DirCatalog::new(dir)), dir, admin).await
}

#[tokio::test]
async fn a_tenants_file_from_a_newer_version_is_refused_with_its_reason() {
    let dir = tempfile::tempdir().unwrap();
    let (tenants, _) = open(dir.path(), Some("admin".into())).await.unwrap();
    tenants.create("acme", None).await.unwrap();
    let path = dir.path().join(TENANTS_KEY);
    let mut json: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&path).unwrap()).unwrap();
    assert_eq!(json["format"], 1, "{json}");
    json["format"] = 2.into();
    std::fs::write(&path, serde_json::to_vec(&json).unwrap()).unwrap();
    let Err(e) = open(dir.path(), Some("admin".into())).await else {
        panic!("a newer tenants file must not open");
    };
    assert!(
        format!("{e:#}").contains("the tenants file was written by a newer version of Weir"),
        "{e:#}"
    );
}

impl Tenants {
    fn caller(&self, token: &str) -> Option<Caller> {
        self.identify(token).map(|identity| match identity {
            Identity::Admin => Caller::Admin,
            Identity::Tenant(credential) => Caller::Tenant(credential.tenant),
        })
    }
}

#[tokio::test]
async fn tokens_authenticate_until_revoked_and_survive_a_reopen() {
    let dir = tempfile::tempdir().unwrap();
    let (tenants, file) = open(dir.path(), Some("root".into())).await.unwrap();
    assert!(file.is_none());
    assert_eq!(tenants.caller("root"), Some(Caller::Admin));
    tenants.create("acme", None).await.unwrap();
    let issued = tenants.issue_token("acme").await.unwrap();
    assert_eq!(
        tenants.caller(&issued.token),
        Some(Caller::Tenant("acme".into()))
    );
    assert_eq!(tenants.caller("weir_nope"), None);
    let stored = std::fs::read_to_string(dir.path().join(TENANTS_KEY)).unwrap();
    assert!(!stored.contains(&issued.token), "only the hash is stored");

    let (reopened, _) = open(dir.path(), Some("root".into())).await.unwrap();
    assert_eq!(
        reopened.caller(&issued.token),
        Some(Caller::Tenant("acme".into()))
    );
    reopened.revoke_token("acme", &issued.id).await.unwrap();
    assert_eq!(reopened.caller(&issued.token), None);
    assert!(matches!(
        reopened.create("acme", None).await,
        Err(TenancyError::Exists(_))
    ));
    assert!(reopened.create("Bad.Name", None).await.is_err());
}

#[tokio::test]
async fn a_generated_admin_token_is_private_and_kept() {
    let dir = tempfile::tempdir().unwrap();
    let (tenants, file) = open(dir.path(), None).await.unwrap();
    let file = file.expect("generated");
    let token = std::fs::read_to_string(&file).unwrap();
    assert_eq!(tenants.caller(token.trim()), Some(Caller::Admin));
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&file).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
    }
    let (again, _) = open(dir.path(), None).await.unwrap();
    assert_eq!(again.caller(token.trim()), Some(Caller::Admin));
}

fn credential(tenants: &Tenants, token: &str) -> Credential {
    match tenants.identify(token) {
        Some(Identity::Tenant(credential)) => credential,
        other => panic!("not a tenant's token: {other:?}"),
    }
}

#[tokio::test]
async fn credentials_lapse_with_their_token_and_with_their_tenants_life() {
    let dir = tempfile::tempdir().unwrap();
    let (tenants, _) = open(dir.path(), Some("root".into())).await.unwrap();
    tenants.create("acme", None).await.unwrap();
    let (first, second) = (
        tenants.issue_token("acme").await.unwrap(),
        tenants.issue_token("acme").await.unwrap(),
    );
    let (one, two) = (
        credential(&tenants, &first.token),
        credential(&tenants, &second.token),
    );
    let mut revocations = tenants.revocations();
    assert!(tenants.lease(&one).await.is_some());
    tenants.revoke_token("acme", &first.id).await.unwrap();
    assert!(revocations.has_changed().unwrap(), "sessions are woken");
    revocations.mark_unchanged();
    assert!(tenants.lease(&one).await.is_none());
    assert!(tenants.is_valid(&two), "the other token still stands");

    // A deletion revokes every token and waits for requests in flight.
    let in_flight = tenants.lease(&two).await.unwrap();
    let departing = tenants.begin_delete("acme").await.unwrap();
    assert!(revocations.has_changed().unwrap());
    assert!(!tenants.is_valid(&two));
    {
        let finished = departing.requests_finished();
        tokio::pin!(finished);
        let waited = tokio::time::timeout(std::time::Duration::from_millis(50), &mut finished);
        assert!(waited.await.is_err(), "the request in flight is waited for");
        drop(in_flight);
        finished.await;
    }
    assert!(tenants.lease(&two).await.is_none());
    tenants.finish_delete(departing).await.unwrap();

    // The same name again is a new life: the old one's credentials never
    // pass for it, even with a token id it reuses.
    tenants.create("acme", None).await.unwrap();
    let third = tenants.issue_token("acme").await.unwrap();
    let old_life = Credential {
        token_id: third.id.clone(),
        ..two.clone()
    };
    assert!(!tenants.is_valid(&old_life));
    assert!(tenants.is_valid(&credential(&tenants, &third.token)));
}

#[tokio::test]
async fn a_deletion_cut_short_keeps_the_name_until_it_is_finished() {
    let dir = tempfile::tempdir().unwrap();
    let (tenants, _) = open(dir.path(), Some("root".into())).await.unwrap();
    tenants.create("acme", None).await.unwrap();
    let issued = tenants.issue_token("acme").await.unwrap();
    tenants.begin_delete("acme").await.unwrap();
    // The server stops before the tenant's resources are deleted.
    let (reopened, _) = open(dir.path(), Some("root".into())).await.unwrap();
    assert_eq!(reopened.caller(&issued.token), None);
    assert!(reopened.get("acme").unwrap().deleting);
    assert!(matches!(
        reopened.create("acme", None).await,
        Err(TenancyError::BeingDeleted(_))
    ));
    assert!(matches!(
        reopened.issue_token("acme").await,
        Err(TenancyError::BeingDeleted(_))
    ));
    let departing = reopened.begin_delete("acme").await.unwrap();
    reopened.finish_delete(departing).await.unwrap();
    reopened.create("acme", None).await.unwrap();
    assert!(!reopened.get("acme").unwrap().deleting);
}

/// Two workers sharing one catalog (here a directory; on a cluster, the
/// cluster's): a token issued through one works on the other, and one
/// revoked through one stops working on the other once it reads again.
#[tokio::test]
async fn workers_sharing_a_catalog_share_tenants_and_revocations() {
    let dir = tempfile::tempdir().unwrap();
    let catalog: Arc<dyn Catalog> = Arc::new(DirCatalog::new(dir.path()));
    let (a, _) = Tenants::open(catalog.clone(), dir.path(), Some("root".into()))
        .await
        .unwrap();
    let (b, _) = Tenants::open(catalog, dir.path(), Some("root".into()))
        .await
        .unwrap();
    a.create("acme", None).await.unwrap();
    let issued = a.issue_token("acme").await.unwrap();
    let Some(Identity::Tenant(on_b)) = b.identify_fresh(&issued.token).await else {
        panic!("a token issued on another worker is found");
    };
    assert!(b.create("acme", None).await.is_err(), "b sees a's tenant");
    let revocations = b.revocations();
    a.revoke_token("acme", &issued.id).await.unwrap();
    assert!(b.is_valid(&on_b), "until b reads again");
    b.reread().await.unwrap();
    assert!(revocations.has_changed().unwrap(), "b's sessions are woken");
    assert!(!b.is_valid(&on_b));
    assert!(b.identify_fresh(&issued.token).await.is_none());
}
