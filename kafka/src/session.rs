//! What a connection knows about its client: its peer, the namespace its
//! names live in, the credential it signed in with (and whether that still
//! stands), and what a handler asks of the connection after answering
//! (close, mute, budget held). The connection that holds it is
//! `connection`'s; the handlers that read and set it are the request
//! modules'.

use std::net::SocketAddr;
use std::time::Duration;

use weir_tenancy::Namespace;
use weir_tenancy::tenants::Credential;

use super::Broker;
use super::budget::{Held, Party};

/// What a connection knows about its client.
pub struct Session {
    pub peer: SocketAddr,
    /// The names this client sees; `None` until SASL has authenticated it
    /// when tenancy is on.
    pub namespace: Option<Namespace>,
    /// With tenancy, the token SASL authenticated: checked before every
    /// request, and watched while one waits.
    pub credential: Option<Credential>,
    /// A SaslHandshake chose PLAIN; SaslAuthenticate may follow.
    pub sasl_started: bool,
    /// Set by a handler: close the connection once the answer is written
    /// (failed authentication, a failed produce with acks 0).
    pub close_after_answer: Option<String>,
    /// Set by a handler: read nothing more from this client for this long
    /// after answering (a produce over the tenant's rate, as KIP-219).
    pub mute_for: Duration,
    /// The budget the request's frame holds while it is handled; a
    /// handler that waits for more (a fetch) releases it first.
    pub request_budget: Option<Held>,
    /// Set by a handler: budget held for the answer until it is written
    /// (a fetch's records).
    pub answer_budget: Option<Held>,
}

impl Session {
    /// Whose share of the request budget this connection uses.
    pub fn party(&self, broker: &Broker) -> Party {
        match (&broker.ctx.tenants, &self.namespace) {
            (None, _) => Party::Everyone,
            (Some(_), None) => Party::Anonymous,
            (Some(_), Some(namespace)) => match namespace.tenant_name() {
                Some(tenant) => Party::Tenant(tenant.to_string()),
                None => Party::Anonymous,
            },
        }
    }

    /// The namespace of an authenticated session.
    pub fn namespace(&self) -> &Namespace {
        self.namespace
            .as_ref()
            .expect("requests other than SASL are answered only once authenticated")
    }

    /// Resolves once this session's credential no longer stands; never for
    /// a session without one (tenancy off, or not authenticated yet).
    pub(super) fn revoked(&self, broker: &Broker) -> impl Future<Output = ()> + Send + 'static {
        let watched = broker.ctx.tenants.clone().zip(self.credential.clone());
        async move {
            let Some((tenants, credential)) = watched else {
                return std::future::pending().await;
            };
            // Subscribed before checking: a revocation after the check
            // still wakes this.
            let mut revocations = tenants.revocations();
            while tenants.is_valid(&credential) {
                if revocations.changed().await.is_err() {
                    return std::future::pending().await;
                }
            }
        }
    }
}
