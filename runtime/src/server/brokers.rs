//! The Kafka listener's view of the workers sharing a cluster: every live
//! worker that told its Kafka address in its heartbeat is a broker.

use std::sync::Arc;

use weir_kafka::{Brokers, KafkaNode};
use weir_pipeline::Pipelines;

/// The live workers' brokers, from the pipelines' work sharing.
pub struct WorkerBrokers(pub Arc<Pipelines>);

impl Brokers for WorkerBrokers {
    fn nodes(&self) -> Vec<KafkaNode> {
        let workers = self.0.placement().unwrap_or_default();
        workers
            .into_iter()
            .filter_map(|w| {
                let (host, port) = w.kafka.as_deref()?.rsplit_once(':')?;
                Some(KafkaNode {
                    host: host.trim_matches(['[', ']']).to_string(),
                    port: port.parse().ok()?,
                    this: w.this,
                    worker: w.worker,
                })
            })
            .collect()
    }
}
