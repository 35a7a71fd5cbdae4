//! Benchmark of the Kafka listener (`runtime/src/kafka`): librdkafka (the
//! `rdkafka` crate) producing into and consuming out of a real `weir serve`
//! started in this process, each against the log's own append and read of
//! the same records in the same run.
//!
//! 1. Produce: N records (100-byte or 1 KiB values, no key) sent by one
//!    rdkafka producer (acks=all, up to 1 MB batches, 5 ms linger) to a
//!    one-partition topic, timed from the second send (the first waits for
//!    the connection and metadata) until every delivery is acknowledged. Baseline: one thread appending the same number of
//!    records straight to `log-core`, in batches of the size the producer
//!    actually sent (counted from the stored topic afterwards), to a topic
//!    of the same durability. Topics `always` and `never`.
//! 2. Fetch: one rdkafka consumer (partition assigned, no group) reading
//!    the whole topic from offset 0 and touching every payload, timed from
//!    the first record received, against
//!    reading the same partition with `Partition::read` (1 MiB at a time)
//!    and iterating every record.
//!
//! 3. For reference, a plain TCP copy on loopback of as many bytes as the
//!    topic stores (4 MiB writes from memory, 4 MiB reads): what any fetch
//!    path through a socket here could reach at best.
//! 4. The same two over the bare protocol: a client that sends
//!    pre-encoded ProduceRequests (one batch each, of the size librdkafka
//!    sent, pipelined on one connection) and one that loops FetchRequests of
//!    4 MiB and walks every record. librdkafka spends about a microsecond
//!    of client CPU per record, which caps rows 1 and 2 far below what the
//!    server can take; these rows show the server's own cost.
//!
//! ```text
//! cargo bench -p weir-bench --bench kafka            # about a minute
//! cargo bench -p weir-bench --bench kafka -- --quick
//! ```

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use std::io::{Read, Write};
use std::net::TcpStream;

use bytes::{BufMut, Bytes, BytesMut};
use kafka_protocol::messages::fetch_request::{FetchPartition, FetchRequest, FetchTopic};
use kafka_protocol::messages::fetch_response::FetchResponse;
use kafka_protocol::messages::produce_request::{
    PartitionProduceData, ProduceRequest, TopicProduceData,
};
use kafka_protocol::messages::{RequestHeader, ResponseHeader, TopicName};
use kafka_protocol::protocol::{Decodable, Encodable, HeaderVersion, Request, StrBytes};
use log_core::Log;
use rdkafka::ClientContext;
use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::producer::{BaseProducer, BaseRecord, DeliveryResult, Producer, ProducerContext};
use rdkafka::{Message, Offset, TopicPartitionList};
use weir::server::{Server, ServerConfig};
use weir_bench::report::{Row, median, print_table};
use weir_format::{Batch, BatchBuilder, Record};
use weir_log::StreamLog;
use weir_log::{Durability, TopicConfig};

struct Settings {
    /// Records of 100 bytes; a tenth as many of 1 KiB.
    records: usize,
    runs: usize,
}

impl Settings {
    fn parse() -> Settings {
        if std::env::args().any(|a| a == "--quick") {
            Settings {
                records: 200_000,
                runs: 1,
            }
        } else {
            Settings {
                records: 1_000_000,
                runs: 3,
            }
        }
    }
}

/// A `weir serve` in this process, with its Kafka listener.
struct WeirProcess {
    _dir: tempfile::TempDir,
    kafka: String,
    runtime: tokio::runtime::Runtime,
    log: Arc<dyn StreamLog>,
}

fn start_weir() -> WeirProcess {
    let dir = tempfile::tempdir().expect("temp dir");
    let mut config = ServerConfig {
        data_dir: dir.path().join("data"),
        listen: "127.0.0.1:0".parse().unwrap(),
        ..ServerConfig::default()
    };
    config.kafka.listen = "127.0.0.1:0".parse().unwrap();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let server = runtime
        .block_on(Server::start(config))
        .expect("start the server");
    let kafka = server.kafka.as_ref().expect("Kafka is on").advertised();
    let log = server.log();
    runtime.spawn(server.run(std::future::pending()));
    WeirProcess {
        _dir: dir,
        kafka,
        runtime,
        log,
    }
}

/// Counts acknowledged deliveries; failures abort the benchmark.
struct Acks(Arc<AtomicUsize>);

impl ClientContext for Acks {}

impl ProducerContext for Acks {
    type DeliveryOpaque = ();
    fn delivery(&self, result: &DeliveryResult<'_>, _: ()) {
        if let Err((e, _)) = result {
            panic!("delivery failed: {e}");
        }
        self.0.fetch_add(1, Ordering::Relaxed);
    }
}

/// Produces `count` records of `value` to `topic`; returns records/s.
fn kafka_produce(weir: &WeirProcess, topic: &str, count: usize, value: &[u8]) -> f64 {
    let acked = Arc::new(AtomicUsize::new(0));
    let producer: BaseProducer<Acks> = ClientConfig::new()
        .set("bootstrap.servers", &weir.kafka)
        .set("acks", "all")
        .set("linger.ms", "5")
        .set("batch.size", "1000000")
        .set("batch.num.messages", "100000")
        .set("queue.buffering.max.messages", "1000000")
        .set("queue.buffering.max.kbytes", "1048576")
        .create_with_context(Acks(acked.clone()))
        .expect("producer");
    // Connecting and learning the metadata is not what is measured: one
    // record goes through first (and counts as produced).
    producer
        .send(BaseRecord::<(), [u8]>::to(topic).payload(value))
        .map_err(|(e, _)| e)
        .expect("send the first record");
    producer
        .flush(Duration::from_secs(30))
        .expect("first delivery");
    let started = Instant::now();
    for _ in 1..count {
        let mut record = BaseRecord::<(), [u8]>::to(topic).payload(value);
        loop {
            match producer.send(record) {
                Ok(()) => break,
                Err((e, back)) => {
                    assert_eq!(
                        e.rdkafka_error_code(),
                        Some(rdkafka::types::RDKafkaErrorCode::QueueFull),
                        "send failed: {e}"
                    );
                    record = back;
                    producer.poll(Duration::from_millis(1));
                }
            }
        }
    }
    producer.flush(Duration::from_secs(120)).expect("flush");
    let elapsed = started.elapsed();
    assert_eq!(acked.load(Ordering::Relaxed), count);
    (count - 1) as f64 / elapsed.as_secs_f64()
}

/// Reads `count` records of `topic` from the start; returns records/s.
fn kafka_fetch(weir: &WeirProcess, topic: &str, count: usize) -> f64 {
    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", &weir.kafka)
        .set("group.id", "bench")
        .set("enable.auto.commit", "false")
        .set("fetch.max.bytes", "52428800")
        .set("max.partition.fetch.bytes", "4194304")
        .set("fetch.wait.max.ms", "10")
        // librdkafka pauses fetching for a second once 100,000 messages
        // are queued; a benchmark drains as fast as it fetches.
        .set("queued.min.messages", "10000000")
        .set("queued.max.messages.kbytes", "2097151")
        .set("fetch.queue.backoff.ms", "1")
        .create()
        .expect("consumer");
    let mut assignment = TopicPartitionList::new();
    assignment
        .add_partition_offset(topic, 0, Offset::Beginning)
        .unwrap();
    consumer.assign(&assignment).expect("assign");
    // Timed from the first record: connecting and resolving the start
    // offset are not what is measured.
    let mut started = Instant::now();
    let (mut seen, mut bytes) = (0, 0usize);
    while seen < count {
        if seen == 1 {
            started = Instant::now();
        }
        match consumer.poll(Duration::from_secs(10)) {
            Some(Ok(message)) => {
                bytes += message.payload().map_or(0, <[u8]>::len);
                seen += 1;
            }
            Some(Err(e)) => panic!("consume failed: {e}"),
            None => panic!("stalled after {seen} records"),
        }
    }
    let elapsed = started.elapsed();
    assert!(bytes > 0);
    (count - 1) as f64 / elapsed.as_secs_f64()
}

/// `count` records of `value` in batches of `batch`.
fn batches(count: usize, batch: usize, value: &[u8]) -> Vec<Batch> {
    let mut out = Vec::new();
    let mut left = count;
    while left > 0 {
        let n = left.min(batch);
        let mut builder = BatchBuilder::with_capacity(n * (value.len() + 16));
        for _ in 0..n {
            builder.push(&Record {
                value: Some(value),
                timestamp: 1_700_000_000_000,
                ..Record::default()
            });
        }
        out.push(builder.finish().expect("batch"));
        left -= n;
    }
    out
}

/// A request frame: size, header, body.
fn frame<R: Request>(request: &R, version: i16, correlation_id: i32) -> Bytes {
    let mut body = BytesMut::new();
    body.put_i32(0);
    RequestHeader::default()
        .with_request_api_key(R::KEY)
        .with_request_api_version(version)
        .with_correlation_id(correlation_id)
        .encode(&mut body, R::header_version(version))
        .expect("header");
    request.encode(&mut body, version).expect("request");
    let size = (body.len() - 4) as i32;
    body[..4].copy_from_slice(&size.to_be_bytes());
    body.freeze()
}

/// Reads one response frame and decodes it as `R`'s response.
fn response<R: Request>(stream: &mut TcpStream, version: i16) -> R::Response {
    let mut size = [0u8; 4];
    stream.read_exact(&mut size).expect("response size");
    let mut body = vec![0u8; i32::from_be_bytes(size) as usize];
    stream.read_exact(&mut body).expect("response body");
    let mut body = Bytes::from(body);
    ResponseHeader::decode(&mut body, R::Response::header_version(version)).expect("header");
    R::Response::decode(&mut body, version).expect("response")
}

/// Sends every batch as its own ProduceRequest (acks=all) on one
/// connection, writing while a second thread reads the answers; records/s.
fn raw_produce(weir: &WeirProcess, topic: &str, count: usize, batch: usize, value: &[u8]) -> f64 {
    let frames: Vec<Bytes> = batches(count, batch, value)
        .into_iter()
        .enumerate()
        .map(|(i, batch)| {
            let request = ProduceRequest::default()
                .with_transactional_id(None)
                .with_acks(-1)
                .with_timeout_ms(30_000)
                .with_topic_data(vec![
                    TopicProduceData::default()
                        .with_name(TopicName(StrBytes::from_string(topic.to_string())))
                        .with_partition_data(vec![
                            PartitionProduceData::default()
                                .with_index(0)
                                .with_records(Some(batch.into_bytes())),
                        ]),
                ]);
            frame(&request, 9, i as i32)
        })
        .collect();
    let mut writer = TcpStream::connect(&weir.kafka).expect("connect");
    writer.set_nodelay(true).unwrap();
    let mut reader = writer.try_clone().unwrap();
    let answers = frames.len();
    let started = Instant::now();
    let read = std::thread::spawn(move || {
        for _ in 0..answers {
            let answer = response::<ProduceRequest>(&mut reader, 9);
            let code = answer.responses[0].partition_responses[0].error_code;
            assert_eq!(code, 0, "produce failed");
        }
    });
    for frame in &frames {
        writer.write_all(frame).expect("send");
    }
    read.join().expect("all answered");
    count as f64 / started.elapsed().as_secs_f64()
}

/// Copies `bytes` over a loopback TCP connection, 4 MiB at a time, from
/// memory to memory; returns `count` records' worth per second.
fn tcp_copy(bytes: usize, count: usize) -> f64 {
    const CHUNK: usize = 4 << 20;
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("listen");
    let addr = listener.local_addr().unwrap();
    let sender = std::thread::spawn(move || {
        let (mut stream, _) = listener.accept().expect("accept");
        let chunk = vec![b'v'; CHUNK];
        let mut left = bytes;
        while left > 0 {
            let n = left.min(CHUNK);
            stream.write_all(&chunk[..n]).expect("send");
            left -= n;
        }
    });
    let mut stream = TcpStream::connect(addr).expect("connect");
    let mut buffer = vec![0u8; CHUNK];
    let started = Instant::now();
    let mut received = 0;
    while received < bytes {
        let n = stream.read(&mut buffer).expect("receive");
        assert!(n > 0, "the sender stopped early");
        received += n;
    }
    let elapsed = started.elapsed();
    sender.join().expect("sent");
    count as f64 / elapsed.as_secs_f64()
}

/// Fetches the whole partition 4 MiB at a time and walks every record;
/// records/s.
fn raw_fetch(weir: &WeirProcess, topic: &str, count: usize) -> f64 {
    let mut stream = TcpStream::connect(&weir.kafka).expect("connect");
    stream.set_nodelay(true).unwrap();
    let started = Instant::now();
    let (mut offset, mut seen, mut bytes) = (0i64, 0usize, 0usize);
    while seen < count {
        let request = FetchRequest::default()
            .with_max_wait_ms(100)
            .with_max_bytes(4 << 20)
            .with_topics(vec![
                FetchTopic::default()
                    .with_topic(TopicName(StrBytes::from_string(topic.to_string())))
                    .with_partitions(vec![
                        FetchPartition::default()
                            .with_fetch_offset(offset)
                            .with_partition_max_bytes(4 << 20),
                    ]),
            ]);
        stream.write_all(&frame(&request, 12, 0)).expect("send");
        let answer: FetchResponse = response::<FetchRequest>(&mut stream, 12);
        let records = answer.responses[0].partitions[0]
            .records
            .clone()
            .unwrap_or_default();
        for batch in weir_format::Batches::assume_valid(&records) {
            let batch = batch.expect("a stored batch");
            for record in batch.records().filter(|r| r.offset as i64 >= offset) {
                bytes += record.value.map_or(0, <[u8]>::len);
                seen += 1;
            }
            offset = batch.next_offset() as i64;
        }
    }
    assert!(bytes > 0);
    seen as f64 / started.elapsed().as_secs_f64()
}

/// Appends `count` records straight to `log-core` in batches of `batch`;
/// returns (records/s, the log, its partition) for the read baseline.
fn log_append(
    durability: log_core::Durability,
    count: usize,
    batch: usize,
    value: &[u8],
) -> (f64, tempfile::TempDir, log_core::Partition) {
    let dir = tempfile::tempdir().expect("temp dir");
    let log = Log::open(dir.path().join("log")).expect("open log");
    let topic = log
        .create_topic(
            "baseline",
            log_core::TopicConfig {
                durability,
                max_batch_bytes: 64 << 20,
                ..log_core::TopicConfig::default()
            },
        )
        .expect("topic");
    let partition = topic.partition(0).expect("partition").clone();
    let batches = batches(count, batch, value);
    let started = Instant::now();
    for batch in batches {
        partition.append(batch).expect("append");
    }
    let rate = count as f64 / started.elapsed().as_secs_f64();
    (rate, dir, partition)
}

/// Reads a whole partition through `log-core`; returns records/s.
fn log_read(partition: &log_core::Partition, count: usize) -> f64 {
    let started = Instant::now();
    let (mut offset, mut seen, mut bytes) = (0, 0usize, 0usize);
    while seen < count {
        for batch in partition.read(offset, 1 << 20).expect("read") {
            for record in batch.records().filter(|r| r.offset >= offset) {
                bytes += record.value.map_or(0, <[u8]>::len);
                seen += 1;
            }
            offset = batch.next_offset();
        }
    }
    assert!(bytes > 0);
    seen as f64 / started.elapsed().as_secs_f64()
}

/// Records per stored batch of a topic of the server's log.
fn records_per_batch(weir: &WeirProcess, topic: &str) -> usize {
    let log = weir.log.clone();
    let topic = topic.to_string();
    weir.runtime.block_on(async move {
        let end = log.topic(&topic).await.unwrap().partitions[0].end_offset;
        let (mut offset, mut batches) = (0, 0usize);
        while offset < end {
            let read = log.read(&topic, 0, offset, 8 << 20).await.unwrap();
            batches += read.len();
            offset = read.last().unwrap().next_offset();
        }
        (end as usize / batches.max(1)).max(1)
    })
}

fn create_topic(weir: &WeirProcess, topic: &str, durability: Durability) {
    weir.runtime
        .block_on(weir.log.create_topic(
            topic,
            TopicConfig {
                durability,
                max_batch_bytes: 64 << 20,
                ..TopicConfig::default()
            },
        ))
        .expect("create the topic");
}

/// Medians of one measurement's runs.
#[derive(Default)]
struct Rates {
    client: Vec<f64>,
    raw: Vec<f64>,
    log: Vec<f64>,
    /// The plain TCP copy (fetch only).
    tcp: Vec<f64>,
}

fn rows(rows: &mut Vec<Row>, what: &str, rates: Rates, baseline: &str, goal: &str) {
    let log = median(rates.log);
    for (client, rate) in [("rdkafka", rates.client), ("bare protocol", rates.raw)] {
        let rate = median(rate);
        rows.push(Row {
            measurement: format!("{what}, {client}"),
            weir: format!("{:.2} M rec/s", rate / 1e6),
            baseline: format!("{:.2} M rec/s ({baseline})", log / 1e6),
            ratio: rate / log,
            goal: goal.into(),
        });
    }
}

fn main() {
    let settings = Settings::parse();
    let weir = start_weir();
    let mut table = Vec::new();
    for (label, size, count) in [
        ("100 B", 100usize, settings.records),
        ("1 KiB", 1024, settings.records / 10),
    ] {
        let value = vec![b'v'; size];
        let mut fetch = Rates::default();
        for (durability, raw_durability) in [
            (Durability::Always, log_core::Durability::Always),
            (Durability::Never, log_core::Durability::Never),
        ] {
            let name = format!("{durability:?}").to_lowercase();
            let mut produce = Rates::default();
            for run in 0..settings.runs {
                let topic = format!("bench-{size}-{name}-{run}");
                let raw_topic = format!("{topic}-raw");
                create_topic(&weir, &topic, durability);
                create_topic(&weir, &raw_topic, durability);
                let client = kafka_produce(&weir, &topic, count, &value);
                let batch = records_per_batch(&weir, &topic);
                let raw = raw_produce(&weir, &raw_topic, count, batch, &value);
                let (log, _dir, partition) = log_append(raw_durability, count, batch, &value);
                println!(
                    "{label} `{name}` run {run}: produce {client:.0}/s, bare {raw:.0}/s, \
                     log-core append {log:.0}/s ({batch} records per batch)"
                );
                produce.client.push(client);
                produce.raw.push(raw);
                produce.log.push(log);
                if durability == Durability::Never {
                    let client = kafka_fetch(&weir, &topic, count);
                    let raw = raw_fetch(&weir, &topic, count);
                    let log = log_read(&partition, count);
                    let tcp = tcp_copy(partition.size_bytes() as usize, count);
                    println!(
                        "{label} run {run}: fetch {client:.0}/s, bare {raw:.0}/s, \
                         log-core read {log:.0}/s, plain TCP copy {tcp:.0}/s"
                    );
                    fetch.client.push(client);
                    fetch.raw.push(raw);
                    fetch.log.push(log);
                    fetch.tcp.push(tcp);
                }
            }
            rows(
                &mut table,
                &format!("produce acks=all, `{name}`, {label} records"),
                produce,
                "log-core append",
                "≥ 0.5",
            );
        }
        let (raw, tcp) = (median(fetch.raw.clone()), median(fetch.tcp.clone()));
        rows(
            &mut table,
            &format!("fetch, {label} records"),
            fetch,
            "log-core read",
            "≥ 0.8",
        );
        table.push(Row {
            measurement: format!("fetch, {label} records, bare protocol vs a plain TCP copy"),
            weir: format!("{:.2} M rec/s", raw / 1e6),
            baseline: format!("{:.2} M rec/s (same bytes over loopback TCP)", tcp / 1e6),
            ratio: raw / tcp,
            goal: "(reference)".into(),
        });
    }
    print_table(&table);
}
