"""Weir's Kafka listener driven by kafka-python, a client written
independently of librdkafka (pure Python). Run by the Rust test
`kafka::kafka_python_client_works_end_to_end`, which checks the JSON this
prints against the HTTP API.

usage: kafka_python_client.py BOOTSTRAP
"""

import json
import sys
import time

from kafka import KafkaAdminClient, KafkaConsumer, KafkaProducer, TopicPartition
from kafka.admin import NewTopic

# Recent timestamps: the topic made below keeps records for 10 minutes
# by their time, so older ones could be deleted before they are checked.
BASE_TIME = (int(time.time()) - 60) * 1000


def main(bootstrap):
    out = {"base_time": BASE_TIME}
    admin = KafkaAdminClient(bootstrap_servers=bootstrap, client_id="weir-python")
    admin.create_topics(
        [
            NewTopic(
                "py-orders",
                num_partitions=2,
                replication_factor=1,
                topic_configs={"retention.ms": "600000"},
            )
        ]
    )
    out["topics"] = sorted(admin.list_topics())

    producer = KafkaProducer(
        bootstrap_servers=bootstrap, acks="all", compression_type="gzip", linger_ms=5
    )
    futures = [
        producer.send(
            "py-orders",
            key=f"k{i}".encode(),
            value=f"order {i}".encode(),
            headers=[("n", str(i).encode())],
            timestamp_ms=BASE_TIME + i * 1000,
        )
        for i in range(20)
    ]
    producer.flush()
    out["produced"] = [[f.get(timeout=30).partition, f.get().offset] for f in futures]
    producer.close()

    consumer = KafkaConsumer(
        bootstrap_servers=bootstrap,
        group_id="py-group",
        auto_offset_reset="earliest",
        enable_auto_commit=False,
        consumer_timeout_ms=15000,
    )
    consumer.subscribe(["py-orders"])
    records = []
    for message in consumer:
        records.append(
            {
                "partition": message.partition,
                "offset": message.offset,
                "key": message.key.decode(),
                "value": message.value.decode(),
                "timestamp": message.timestamp,
                "headers": [[k, v.decode()] for k, v in message.headers],
            }
        )
        if len(records) == 20:
            break
    consumer.commit()
    out["consumed"] = records
    out["committed"] = {
        str(p): consumer.committed(TopicPartition("py-orders", p)) for p in (0, 1)
    }
    consumer.close()

    reader = KafkaConsumer(bootstrap_servers=bootstrap, consumer_timeout_ms=15000)
    partition = TopicPartition("from-http", 0)
    reader.assign([partition])
    found = reader.offsets_for_times({partition: 2000})
    out["offset_for_2000"] = found[partition].offset
    reader.seek_to_beginning(partition)
    out["from_http"] = []
    for message in reader:
        out["from_http"].append(
            {"key": message.key.hex() if message.key else None, "value": message.value.hex()}
        )
        if len(out["from_http"]) == 3:
            break
    reader.close()

    # Every codec: produced compressed, read back (topics made by the test).
    out["codecs"] = {}
    for codec in ("gzip", "snappy", "lz4", "zstd"):
        topic = f"py-{codec}"
        producer = KafkaProducer(
            bootstrap_servers=bootstrap, acks="all", compression_type=codec, linger_ms=20
        )
        for i in range(50):
            producer.send(topic, value=f"{codec} {i} {'abc' * 20}".encode())
        producer.flush()
        producer.close()
        reader = KafkaConsumer(bootstrap_servers=bootstrap, consumer_timeout_ms=15000)
        reader.assign([TopicPartition(topic, 0)])
        reader.seek_to_beginning()
        values = []
        for message in reader:
            values.append(message.value.decode())
            if len(values) == 50:
                break
        reader.close()
        out["codecs"][codec] = values
    admin.close()
    print(json.dumps(out))


if __name__ == "__main__":
    main(sys.argv[1])
