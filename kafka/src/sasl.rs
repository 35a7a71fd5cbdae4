//! SASL PLAIN (SaslHandshake v1, then SaslAuthenticate): the user name is
//! the tenant and the password one of its tokens, checked exactly as the
//! HTTP API checks a bearer token. An authenticated connection sees and
//! touches only its tenant's topics, in tenant-local names, for as long as
//! that token stands: the session keeps the credential, and the connection
//! closes once it is revoked or the tenant deleted (`connection.rs`).
//!
//! With tenancy on, a connection may send nothing but ApiVersions and the
//! SASL requests (in frames of at most 512 KiB) until it has authenticated;
//! a failed attempt closes the connection. With tenancy off, SASL is not
//! needed; a client that authenticates anyway is let in with any
//! credentials, as every client is.

use bytes::Bytes;
use kafka_protocol::ResponseError;
use kafka_protocol::messages::ApiKey;
use kafka_protocol::messages::sasl_authenticate_request::SaslAuthenticateRequest;
use kafka_protocol::messages::sasl_authenticate_response::SaslAuthenticateResponse;
use kafka_protocol::messages::sasl_handshake_request::SaslHandshakeRequest;
use kafka_protocol::messages::sasl_handshake_response::SaslHandshakeResponse;
use kafka_protocol::protocol::StrBytes;

use super::Broker;
use super::session::Session;
use weir_tenancy::Namespace;
use weir_tenancy::tenants::Identity;

const PLAIN: &str = "PLAIN";

/// Requests a connection may send before it has authenticated.
pub fn allowed_before_authentication(api: ApiKey) -> bool {
    matches!(
        api,
        ApiKey::ApiVersions | ApiKey::SaslHandshake | ApiKey::SaslAuthenticate
    )
}

pub fn handshake(session: &mut Session, request: SaslHandshakeRequest) -> SaslHandshakeResponse {
    let response =
        SaslHandshakeResponse::default().with_mechanisms(vec![StrBytes::from_static_str(PLAIN)]);
    if request.mechanism.as_str() == PLAIN {
        session.sasl_started = true;
        response
    } else {
        response.with_error_code(ResponseError::UnsupportedSaslMechanism.code())
    }
}

/// Checks the credentials; a failure is answered and then closes the
/// connection (as Kafka does), so guessing costs a connection per try.
pub async fn authenticate(
    broker: &Broker,
    session: &mut Session,
    request: SaslAuthenticateRequest,
) -> SaslAuthenticateResponse {
    let response = check(broker, session, request).await;
    if response.error_code != 0 {
        session.namespace = broker.ctx.tenants.is_none().then(Namespace::global);
        session.credential = None;
        session.close_after_answer = Some("SASL authentication failed".into());
    }
    response
}

async fn check(
    broker: &Broker,
    session: &mut Session,
    request: SaslAuthenticateRequest,
) -> SaslAuthenticateResponse {
    let refuse = |code: ResponseError, message: &str| {
        SaslAuthenticateResponse::default()
            .with_error_code(code.code())
            .with_error_message(Some(StrBytes::from_string(message.to_string())))
    };
    if !session.sasl_started {
        return refuse(
            ResponseError::IllegalSaslState,
            "SaslAuthenticate before a SaslHandshake choosing PLAIN",
        );
    }
    session.sasl_started = false;
    let Some((user, password)) = parse_plain(&request.auth_bytes) else {
        return refuse(
            ResponseError::SaslAuthenticationFailed,
            "malformed SASL PLAIN message",
        );
    };
    let (namespace, credential) = match &broker.ctx.tenants {
        None => (Namespace::global(), None),
        Some(tenants) => match tenants.identify_fresh(password).await {
            Some(Identity::Tenant(credential)) if credential.tenant() == user => {
                (Namespace::tenant(user), Some(credential))
            }
            Some(Identity::Admin) => {
                return refuse(
                    ResponseError::SaslAuthenticationFailed,
                    "the admin credential manages tenants; use a tenant's token for its data",
                );
            }
            _ => {
                tracing::info!(peer = %session.peer, user, "Kafka SASL authentication failed");
                return refuse(
                    ResponseError::SaslAuthenticationFailed,
                    "invalid user name or token (the user name is the tenant, the password one of its tokens)",
                );
            }
        },
    };
    session.namespace = Some(namespace);
    session.credential = credential;
    SaslAuthenticateResponse::default().with_auth_bytes(Bytes::new())
}

/// `authzid NUL authcid NUL password` (RFC 4616); an authorization id, if
/// given, must be the user itself.
fn parse_plain(message: &[u8]) -> Option<(&str, &str)> {
    let text = std::str::from_utf8(message).ok()?;
    let mut parts = text.split('\0');
    let (authzid, user, password) = (parts.next()?, parts.next()?, parts.next()?);
    if parts.next().is_some() || user.is_empty() || !(authzid.is_empty() || authzid == user) {
        return None;
    }
    Some((user, password))
}

#[cfg(test)]
mod tests {
    use super::parse_plain;

    #[test]
    fn plain_messages_carry_user_and_password() {
        assert_eq!(parse_plain(b"\0acme\0s3cret"), Some(("acme", "s3cret")));
        assert_eq!(parse_plain(b"acme\0acme\0s3cret"), Some(("acme", "s3cret")));
        assert_eq!(parse_plain(b"other\0acme\0s3cret"), None);
        assert_eq!(parse_plain(b"\0\0s3cret"), None);
        assert_eq!(parse_plain(b"acme:s3cret"), None);
        assert_eq!(parse_plain(b"\0acme\0pw\0extra"), None);
    }
}
