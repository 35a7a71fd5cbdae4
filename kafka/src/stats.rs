//! Counters of the Kafka listener, shown by `GET /metrics`.

use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};

use kafka_protocol::messages::ApiKey;

/// API keys counted (Kafka's are below this).
const API_KEYS: usize = 128;

pub struct KafkaStats {
    open: AtomicI64,
    accepted: AtomicU64,
    broken: AtomicU64,
    request_bytes: AtomicU64,
    response_bytes: AtomicU64,
    requests: [AtomicU64; API_KEYS],
}

impl Default for KafkaStats {
    fn default() -> Self {
        KafkaStats {
            open: AtomicI64::new(0),
            accepted: AtomicU64::new(0),
            broken: AtomicU64::new(0),
            request_bytes: AtomicU64::new(0),
            response_bytes: AtomicU64::new(0),
            requests: std::array::from_fn(|_| AtomicU64::new(0)),
        }
    }
}

impl KafkaStats {
    pub(super) fn opened(&self) {
        self.open.fetch_add(1, Ordering::Relaxed);
        self.accepted.fetch_add(1, Ordering::Relaxed);
    }

    pub(super) fn closed(&self, broken: bool) {
        self.open.fetch_sub(1, Ordering::Relaxed);
        if broken {
            self.broken.fetch_add(1, Ordering::Relaxed);
        }
    }

    pub(super) fn request(&self, api: ApiKey, bytes: usize) {
        if let Some(count) = self.requests.get(api as i16 as usize) {
            count.fetch_add(1, Ordering::Relaxed);
        }
        self.request_bytes
            .fetch_add(bytes as u64, Ordering::Relaxed);
    }

    pub(super) fn response(&self, bytes: usize) {
        self.response_bytes
            .fetch_add(bytes as u64, Ordering::Relaxed);
    }

    /// Connections open now.
    pub fn open_connections(&self) -> i64 {
        self.open.load(Ordering::Relaxed)
    }

    pub fn accepted_connections(&self) -> u64 {
        self.accepted.load(Ordering::Relaxed)
    }

    /// Connections closed because the client broke the protocol.
    pub fn broken_connections(&self) -> u64 {
        self.broken.load(Ordering::Relaxed)
    }

    pub fn request_bytes(&self) -> u64 {
        self.request_bytes.load(Ordering::Relaxed)
    }

    pub fn response_bytes(&self) -> u64 {
        self.response_bytes.load(Ordering::Relaxed)
    }

    /// Requests answered so far, by API name (only APIs seen).
    pub fn requests(&self) -> Vec<(String, u64)> {
        ApiKey::iter()
            .filter_map(|api| {
                let count = self
                    .requests
                    .get(api as i16 as usize)?
                    .load(Ordering::Relaxed);
                (count > 0).then(|| (format!("{api:?}"), count))
            })
            .collect()
    }
}
