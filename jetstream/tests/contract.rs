//! The log interface's conformance suite (`weir_log::contract`) against
//! the JetStream backend: `jetstream::CHECK`, each over a NATS server of
//! its own (the pinned release, installed on first use under the build
//! folder; see `weir_jetstream::testing`).

use std::path::Path;
use std::sync::Arc;

use weir_jetstream::testing::{NatsServer, nats_server_binary};
use weir_jetstream::{JetStreamConfig, JetStreamLog};
use weir_log::contract::Backend;

async fn jetstream() -> Backend {
    let binary = nats_server_binary(Path::new(env!("CARGO_TARGET_TMPDIR")));
    let server = NatsServer::start(&binary);
    let config = JetStreamConfig::for_servers(vec![server.url().to_string()]);
    let log = JetStreamLog::connect(&config)
        .await
        .expect("the JetStream backend connects");
    Backend {
        log: Arc::new(log),
        keep: Box::new(server),
    }
}

mod jetstream {
    weir_log::contract_suite!(super::jetstream);
}

/// The catalog's checks against the cluster's catalog.
#[tokio::test]
async fn catalog() {
    let binary = nats_server_binary(Path::new(env!("CARGO_TARGET_TMPDIR")));
    let server = NatsServer::start(&binary);
    let config = JetStreamConfig::for_servers(vec![server.url().to_string()]);
    let log = JetStreamLog::connect(&config).await.expect("connects");
    weir_log::catalog::contract::check(&*log.catalog()).await;
}
