//! One client connection: reads size-prefixed request frames, answers them
//! in order, and holds the connection's session (who is authenticated,
//! which namespace its names live in).
//!
//! With tenancy, a session is only as good as the token it signed in with.
//! Each request is handled under a lease on the token's tenant
//! ([`Tenants::lease`]), taken only while the token still stands, so a
//! revoked token or a deleted tenant gets no further request served, and
//! the tenant's deletion waits for requests already being handled. While
//! the connection waits for a request, or a request waits (a fetch's
//! long-poll, a JoinGroup or SyncGroup), a revocation closes the
//! connection at once.
//!
//! Memory is bounded: a frame larger than `max_request_bytes` closes the
//! connection before anything is allocated, and the bytes of frames being
//! read or handled, and of fetch answers until they are written, come from
//! the server's budget (`budget.rs`), so slow or stuck clients cannot hold
//! more than `max_in_flight_bytes` together, nor one tenant more than its
//! share. A frame that does
//! not decode, an unknown API or an unsupported version (other than
//! ApiVersions, which answers with the versions spoken) closes only this
//! connection.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::{Buf, Bytes, BytesMut};
use kafka_protocol::messages::{ApiKey, RequestHeader, RequestKind, ResponseHeader, ResponseKind};
use kafka_protocol::protocol::{Decodable, Encodable};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use super::frame::{Frame, FrameBuilder};
use super::session::Session;
use super::{
    Broker, admin, fetch, groups, metadata, offsets, produce, sasl, txn_requests, versions,
};
use weir_tenancy::Namespace;

/// A connection with no request for this long is closed (Kafka's
/// `connections.max.idle.ms`).
const IDLE_TIMEOUT: Duration = Duration::from_secs(600);
/// Once a frame's size has arrived, the rest must follow within this.
const FRAME_TIMEOUT: Duration = Duration::from_secs(60);
/// A client that takes longer than this to take a response is dropped.
const WRITE_TIMEOUT: Duration = Duration::from_secs(120);
/// Largest frame before SASL authentication (Kafka's
/// `sasl.server.max.receive.size`): unauthenticated clients cannot take a
/// large share of the request budget.
const MAX_UNAUTHENTICATED_FRAME: usize = 512 << 10;
/// Why a session's connection is closed when its credential lapses.
const REVOKED: &str = "its token was revoked or its tenant deleted";

/// Why a connection ends.
enum Close {
    /// The client went away or idled out.
    Quietly,
    /// The client broke the protocol, or the log could not answer; logged.
    Because(String),
}

/// Serves one connection until the client closes it or breaks the protocol.
pub async fn serve(mut stream: TcpStream, peer: SocketAddr, broker: Arc<Broker>) {
    let _ = stream.set_nodelay(true);
    let mut session = Session {
        peer,
        namespace: broker.ctx.tenants.is_none().then(Namespace::global),
        credential: None,
        sasl_started: false,
        close_after_answer: None,
        mute_for: Duration::ZERO,
        request_budget: None,
        answer_budget: None,
    };
    broker.stats.opened();
    let broken = loop {
        match serve_one(&mut stream, &mut session, &broker).await {
            Ok(()) => {}
            Err(Close::Quietly) => break false,
            Err(Close::Because(reason)) => {
                tracing::info!(%peer, "closing Kafka connection: {reason}");
                break true;
            }
        }
    };
    broker.stats.closed(broken);
}

/// Reads, answers and writes one request.
async fn serve_one(
    stream: &mut TcpStream,
    session: &mut Session,
    broker: &Broker,
) -> Result<(), Close> {
    let revoked = session.revoked(broker);
    let frame = tokio::select! {
        biased;
        () = revoked => return Err(Close::Because(REVOKED.into())),
        frame = read_frame(stream, session, broker) => frame?,
    };
    let answered = answer(frame, session, broker).await;
    // The request is handled: its bytes no longer count, whatever the
    // client does with the answer.
    session.request_budget = None;
    if let Some(mut response) = answered? {
        broker.stats.response(response.len());
        match tokio::time::timeout(WRITE_TIMEOUT, stream.write_all_buf(&mut response)).await {
            Ok(Ok(())) => {}
            Ok(Err(_)) => return Err(Close::Quietly),
            Err(_) => {
                return Err(Close::Because(
                    "the client does not read its answers".into(),
                ));
            }
        }
    }
    session.answer_budget = None;
    if let Some(reason) = session.close_after_answer.take() {
        return Err(Close::Because(reason));
    }
    let mute = std::mem::take(&mut session.mute_for);
    if !mute.is_zero() {
        tokio::time::sleep(mute).await;
    }
    Ok(())
}

/// Reads one request frame, its bytes taken from the budget.
async fn read_frame(
    stream: &mut TcpStream,
    session: &mut Session,
    broker: &Broker,
) -> Result<Bytes, Close> {
    let size = match tokio::time::timeout(IDLE_TIMEOUT, stream.read_i32()).await {
        Ok(Ok(size)) => size,
        Ok(Err(_)) | Err(_) => return Err(Close::Quietly),
    };
    let max = match session.namespace {
        Some(_) => broker.settings.max_request_bytes,
        None => MAX_UNAUTHENTICATED_FRAME.min(broker.settings.max_request_bytes),
    };
    let size = usize::try_from(size)
        .ok()
        .filter(|size| (8..=max).contains(size))
        .ok_or_else(|| {
            Close::Because(format!(
                "request frame of {size} bytes (8 to {max} allowed)"
            ))
        })?;
    session.request_budget = Some(broker.budget.acquire(&session.party(broker), size).await);
    let mut frame = BytesMut::zeroed(size);
    match tokio::time::timeout(FRAME_TIMEOUT, stream.read_exact(&mut frame)).await {
        Ok(Ok(_)) => Ok(frame.freeze()),
        Ok(Err(_)) => Err(Close::Quietly),
        Err(_) => Err(Close::Because("request frame not completed in time".into())),
    }
}

/// Runs a request that may wait long (a long-poll, a group join) until it
/// is done or the session's credential is revoked, whichever comes first.
/// Only requests that may be dropped midway go through here.
async fn unless_revoked<T>(
    revoked: impl Future<Output = ()>,
    request: impl Future<Output = T>,
) -> Result<T, Close> {
    tokio::select! {
        biased;
        () = revoked => Err(Close::Because(REVOKED.into())),
        answer = request => Ok(answer),
    }
}

/// Decodes one request frame, handles it and encodes the response frame
/// (none for a produce with acks 0).
async fn answer(
    mut frame: Bytes,
    session: &mut Session,
    broker: &Broker,
) -> Result<Option<Frame>, Close> {
    let frame_len = frame.len();
    let raw_key = frame.clone().get_i16();
    let version = (&frame[2..4]).get_i16();
    let correlation_id = (&frame[4..8]).get_i32();
    let api_key = ApiKey::try_from(raw_key)
        .map_err(|_| Close::Because(format!("unknown API key {raw_key}")))?;
    if !versions::supported(api_key, version) {
        if api_key == ApiKey::ApiVersions {
            // Answered in v0, which every client can read (KIP-511).
            return encode(correlation_id, api_key, 0, versions::unsupported()).map(Some);
        }
        return Err(Close::Because(format!(
            "{api_key:?} v{version} is not supported"
        )));
    }
    let header =
        decode(|| RequestHeader::decode(&mut frame, api_key.request_header_version(version)))
            .map_err(|e| Close::Because(format!("malformed {api_key:?} request header: {e}")))?;
    let request = decode(|| RequestKind::decode(api_key, &mut frame, version))
        .map_err(|e| Close::Because(format!("malformed {api_key:?} v{version} request: {e}")))?;
    if session.namespace.is_none() && !sasl::allowed_before_authentication(api_key) {
        return Err(Close::Because(format!(
            "{api_key:?} before SASL authentication (this server requires SASL PLAIN)"
        )));
    }
    // Held until the request is handled: the tenant's deletion waits for it.
    let _lease = match (&broker.ctx.tenants, &session.credential) {
        (Some(tenants), Some(credential)) => Some(
            tenants
                .lease(credential)
                .await
                .ok_or_else(|| Close::Because(REVOKED.into()))?,
        ),
        _ => None,
    };
    broker.stats.request(api_key, frame_len);
    // Only the request itself keeps the frame's bytes alive from here on.
    let client = header
        .client_id
        .as_ref()
        .map_or(String::new(), |c| c.to_string());
    let client = client.as_str();
    drop((header, frame));
    tracing::trace!(peer = %session.peer, client, ?api_key, version, "Kafka request");
    let response = match request {
        RequestKind::ApiVersions(_) => ResponseKind::ApiVersions(versions::supported_versions()),
        RequestKind::Metadata(r) => {
            let response = metadata::metadata(broker, session, r, version).await;
            ResponseKind::Metadata(
                response.map_err(|e| Close::Because(format!("the log cannot list topics: {e}")))?,
            )
        }
        RequestKind::Produce(r) => {
            match produce::produce(broker, &mut *session, r, version).await {
                Some(response) => ResponseKind::Produce(response),
                None => return Ok(None),
            }
        }
        RequestKind::Fetch(r) => ResponseKind::Fetch(
            unless_revoked(
                session.revoked(broker),
                fetch::fetch(broker, &mut *session, r, version),
            )
            .await?,
        ),
        RequestKind::ListOffsets(r) => {
            ResponseKind::ListOffsets(offsets::list_offsets(broker, session, r, version).await)
        }
        RequestKind::InitProducerId(r) => ResponseKind::InitProducerId(
            produce::init_producer_id(broker, session, r, version).await,
        ),
        RequestKind::CreateTopics(r) => {
            ResponseKind::CreateTopics(admin::create_topics(broker, session, r, version).await)
        }
        RequestKind::CreatePartitions(r) => {
            ResponseKind::CreatePartitions(admin::create_partitions(broker, session, r).await)
        }
        RequestKind::DeleteTopics(r) => {
            ResponseKind::DeleteTopics(admin::delete_topics(broker, session, r, version).await)
        }
        RequestKind::DescribeConfigs(r) => ResponseKind::DescribeConfigs(
            admin::describe_configs(broker, session, r, version).await,
        ),
        RequestKind::FindCoordinator(r) => {
            ResponseKind::FindCoordinator(groups::find_coordinator(broker, session, r, version))
        }
        RequestKind::JoinGroup(r) => ResponseKind::JoinGroup(
            unless_revoked(
                session.revoked(broker),
                groups::join_group(broker, session, r, client, version),
            )
            .await?,
        ),
        RequestKind::SyncGroup(r) => ResponseKind::SyncGroup(
            unless_revoked(
                session.revoked(broker),
                groups::sync_group(broker, session, r, version),
            )
            .await?,
        ),
        RequestKind::Heartbeat(r) => ResponseKind::Heartbeat(groups::heartbeat(broker, session, r)),
        RequestKind::LeaveGroup(r) => {
            ResponseKind::LeaveGroup(groups::leave_group(broker, session, r, version))
        }
        RequestKind::OffsetCommit(r) => {
            ResponseKind::OffsetCommit(groups::offset_commit(broker, session, r).await)
        }
        RequestKind::OffsetFetch(r) => {
            ResponseKind::OffsetFetch(groups::offset_fetch(broker, session, r).await)
        }
        RequestKind::ListGroups(r) => {
            ResponseKind::ListGroups(groups::list_groups(broker, session, r).await)
        }
        RequestKind::DeleteGroups(r) => {
            ResponseKind::DeleteGroups(groups::delete_groups(broker, session, r).await)
        }
        RequestKind::DescribeGroups(r) => {
            ResponseKind::DescribeGroups(groups::describe_groups(broker, session, r).await)
        }
        RequestKind::AddPartitionsToTxn(r) => {
            ResponseKind::AddPartitionsToTxn(txn_requests::add_partitions(broker, session, r).await)
        }
        RequestKind::AddOffsetsToTxn(r) => {
            ResponseKind::AddOffsetsToTxn(txn_requests::add_offsets(broker, session, r).await)
        }
        RequestKind::TxnOffsetCommit(r) => {
            ResponseKind::TxnOffsetCommit(txn_requests::offset_commit(broker, session, r).await)
        }
        RequestKind::EndTxn(r) => ResponseKind::EndTxn(txn_requests::end(broker, session, r).await),
        RequestKind::SaslHandshake(r) => ResponseKind::SaslHandshake(sasl::handshake(session, r)),
        RequestKind::SaslAuthenticate(r) => {
            ResponseKind::SaslAuthenticate(sasl::authenticate(broker, session, r).await)
        }
        other => {
            return Err(Close::Because(format!(
                "no handler for {:?}",
                std::mem::discriminant(&other)
            )));
        }
    };
    encode(correlation_id, api_key, version, response).map(Some)
}

/// Runs a decoder of untrusted bytes; a panic in it counts as a decode error.
fn decode<T>(work: impl FnOnce() -> anyhow::Result<T>) -> anyhow::Result<T> {
    std::panic::catch_unwind(std::panic::AssertUnwindSafe(work))
        .unwrap_or_else(|_| Err(anyhow::anyhow!("the decoder failed on this input")))
}

/// The encoded size of the answers that can be large.
fn response_size(response: &ResponseKind, version: i16) -> anyhow::Result<usize> {
    match response {
        ResponseKind::Fetch(fetch) => fetch.compute_size(version),
        _ => Ok(256),
    }
}

/// The record sets of a fetch answer, in the order they are encoded.
fn fetched_records(response: &ResponseKind) -> Vec<Bytes> {
    match response {
        ResponseKind::Fetch(fetch) => fetch
            .responses
            .iter()
            .flat_map(|topic| &topic.partitions)
            .filter_map(|partition| partition.records.clone())
            .collect(),
        _ => Vec::new(),
    }
}

/// A response frame: size, header, body. A fetch's records are taken by
/// reference, not copied into the frame.
fn encode(
    correlation_id: i32,
    api_key: ApiKey,
    version: i16,
    response: ResponseKind,
) -> Result<Frame, Close> {
    let header = ResponseHeader::default().with_correlation_id(correlation_id);
    let header_version = api_key.response_header_version(version);
    let size = header
        .compute_size(header_version)
        .and_then(|h| Ok(h + response_size(&response, version)?))
        .unwrap_or(256);
    let mut frame = FrameBuilder::new(size, fetched_records(&response));
    header
        .encode(&mut frame, header_version)
        .and_then(|()| match &response {
            ResponseKind::Fetch(fetch) => fetch.encode(&mut frame, version),
            other => other.encode(frame.copied(), version),
        })
        .map_err(|e| {
            tracing::error!(?api_key, version, "encoding a Kafka response failed: {e:#}");
            Close::Because(format!("could not encode the {api_key:?} response"))
        })?;
    frame
        .finish()
        .map_err(|_| Close::Because("response over 2 GiB".into()))
}
