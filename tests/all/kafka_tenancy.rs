//! Tenants over the Kafka protocol, against a real server and real clients
//! (librdkafka and the bare wire client): reserved names stay reserved.

use kafka_protocol::messages::TopicName;
use kafka_protocol::messages::create_topics_request::{CreatableTopic, CreateTopicsRequest};
use kafka_protocol::protocol::StrBytes;
use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::types::RDKafkaErrorCode;
use serde_json::{Value, json};

use crate::kafka::{config, sasl, sasl_login, tenancy_server, tenant_token};
use crate::support::kafka_wire::Wire;
use crate::support::server::WeirServer;

fn text(s: &str) -> StrBytes {
    StrBytes::from_string(s.to_string())
}

/// A bare connection signed in as `tenant`.
fn signed_in(server: &WeirServer, tenant: &str, token: &str) -> Wire {
    let mut wire = Wire::connect(&server.kafka);
    assert_eq!(sasl_login(&mut wire, tenant, token), 0, "{tenant} signs in");
    wire
}

#[test]
fn tenants_cannot_create_reserved_topic_names() {
    let dir = tempfile::tempdir().unwrap();
    let server = tenancy_server(dir.path());
    let token = tenant_token(&server, json!({ "name": "acme" }));
    server.use_token(Some(&token));
    let (status, body) = server.post("/v1/topics", &json!({ "name": "__evil" }));
    assert_eq!(status, 400, "{body}");
    assert!(
        body["error"].as_str().unwrap().contains("reserved"),
        "{body}"
    );

    let settings = sasl("acme", &token);
    let settings = settings.each_ref().map(|(k, v)| (*k, v.as_str()));
    let admin: AdminClient<DefaultClientContext> = config(&server, &settings).create().unwrap();
    let created = futures::executor::block_on(admin.create_topics(
        [
            &NewTopic::new("__evil", 1, TopicReplication::Fixed(1)),
            &NewTopic::new("_fine", 1, TopicReplication::Fixed(1)),
        ],
        &AdminOptions::new(),
    ))
    .unwrap();
    assert_eq!(
        created,
        [
            Err(("__evil".to_string(), RDKafkaErrorCode::InvalidTopic)),
            Ok("_fine".to_string())
        ]
    );
    let mut wire = signed_in(&server, "acme", &token);
    let refused = wire.send(
        &CreateTopicsRequest::default().with_topics(vec![
            CreatableTopic::default()
                .with_name(TopicName(text("__evil")))
                .with_num_partitions(1)
                .with_replication_factor(1),
        ]),
        7,
    );
    let message = refused.topics[0]
        .error_message
        .as_ref()
        .unwrap()
        .to_string();
    assert!(message.contains("reserved"), "{message}");
    let topics: Vec<Value> = server.get("/v1/topics").1["topics"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["name"].clone())
        .collect();
    assert_eq!(topics, [json!("_fine")]);
}
