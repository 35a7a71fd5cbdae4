//! `GET /metrics`: Prometheus text exposition of topics, pipelines and
//! stages, computed from live counters on each scrape.

use std::fmt::Write;

use axum::extract::State;
use axum::http::header::CONTENT_TYPE;
use axum::response::IntoResponse;

use super::App;
use super::auth::Admin;
use super::error::ApiError;
use weir_pipeline::PipelineState;
use weir_pipeline::stats::Step;
use weir_tenancy::Namespace;

/// Writes one metric family: its help, type and samples.
fn family(out: &mut String, name: &str, kind: &str, help: &str, samples: &[(String, f64)]) {
    let _ = writeln!(out, "# HELP {name} {help}");
    let _ = writeln!(out, "# TYPE {name} {kind}");
    for (labels, value) in samples {
        if labels.is_empty() {
            let _ = writeln!(out, "{name} {value}");
        } else {
            let _ = writeln!(out, "{name}{{{labels}}} {value}");
        }
    }
}

/// A label value with `\`, `"` and newlines escaped.
fn label(value: &str) -> String {
    value
        .replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

pub async fn metrics(State(app): State<App>, _admin: Admin) -> Result<impl IntoResponse, ApiError> {
    let mut out = String::new();
    let topics = app.log.topics().await?;
    let partition_samples = |value: fn(&weir_log::PartitionInfo) -> f64| {
        topics
            .iter()
            .flat_map(|t| {
                t.partitions.iter().map(move |p| {
                    (
                        format!("topic=\"{}\",partition=\"{}\"", label(&t.name), p.partition),
                        value(p),
                    )
                })
            })
            .collect::<Vec<_>>()
    };
    family(
        &mut out,
        "weir_topic_end_offset",
        "gauge",
        "One past the last offset of a partition.",
        &partition_samples(|p| p.end_offset as f64),
    );
    family(
        &mut out,
        "weir_topic_start_offset",
        "gauge",
        "First offset still stored in a partition.",
        &partition_samples(|p| p.start_offset as f64),
    );
    family(
        &mut out,
        "weir_topic_size_bytes",
        "gauge",
        "Bytes stored for a partition.",
        &partition_samples(|p| p.size_bytes as f64),
    );

    // On a cluster each worker counts its own tasks: sums over the
    // workers are the pipeline's totals.
    let statuses = app.pipelines.local_statuses().await;
    let per_pipeline = |value: fn(&weir_pipeline::PipelineStatus) -> f64| {
        statuses
            .iter()
            .map(|s| (format!("pipeline=\"{}\"", label(&s.name)), value(s)))
            .collect::<Vec<_>>()
    };
    family(
        &mut out,
        "weir_pipeline_records_in_total",
        "counter",
        "Input records processed.",
        &per_pipeline(|s| s.records_in as f64),
    );
    family(
        &mut out,
        "weir_pipeline_records_out_total",
        "counter",
        "Records appended to output topics.",
        &per_pipeline(|s| s.records_out as f64),
    );
    family(
        &mut out,
        "weir_pipeline_errors_total",
        "counter",
        "Records whose processing failed.",
        &per_pipeline(|s| s.errors as f64),
    );
    family(
        &mut out,
        "weir_pipeline_dead_lettered_total",
        "counter",
        "Records sent to the dead-letter topic.",
        &per_pipeline(|s| s.dead_lettered as f64),
    );
    family(
        &mut out,
        "weir_pipeline_lag_records",
        "gauge",
        "Input records not processed yet.",
        &per_pipeline(|s| s.lag as f64),
    );
    family(
        &mut out,
        "weir_pipeline_up",
        "gauge",
        "1 if running, 0 if paused or failed.",
        &per_pipeline(|s| f64::from(u8::from(s.state == PipelineState::Running))),
    );

    let per_step = statuses
        .iter()
        .flat_map(|s| {
            Step::ALL.into_iter().map(move |step| {
                (
                    format!("pipeline=\"{}\",step=\"{}\"", label(&s.name), step.name()),
                    s.steps.get(step) as f64 / 1000.0,
                )
            })
        })
        .collect::<Vec<_>>();
    family(
        &mut out,
        "weir_pipeline_step_seconds_total",
        "counter",
        "Time a pipeline's tasks spent in each step of their rounds (read, process, backpressure, commit, publish).",
        &per_step,
    );

    let per_stage = |value: fn(&weir_pipeline::stats::StageCounts) -> f64| {
        statuses
            .iter()
            .flat_map(|s| {
                s.stages.iter().enumerate().map(move |(i, stage)| {
                    (
                        format!(
                            "pipeline=\"{}\",stage=\"{}\",module=\"{}\"",
                            label(&s.name),
                            i + 1,
                            label(&stage.module)
                        ),
                        value(&stage.counts),
                    )
                })
            })
            .collect::<Vec<_>>()
    };
    family(
        &mut out,
        "weir_stage_records_in_total",
        "counter",
        "Records into a stage.",
        &per_stage(|c| c.records_in as f64),
    );
    family(
        &mut out,
        "weir_stage_records_out_total",
        "counter",
        "Records out of a stage.",
        &per_stage(|c| c.records_out as f64),
    );
    family(
        &mut out,
        "weir_stage_errors_total",
        "counter",
        "Records a stage failed on.",
        &per_stage(|c| c.errors as f64),
    );
    family(
        &mut out,
        "weir_stage_rejected_total",
        "counter",
        "Records a stage rejected.",
        &per_stage(|c| c.rejected as f64),
    );
    family(
        &mut out,
        "weir_stage_processing_seconds_total",
        "counter",
        "Time spent in a stage's operator.",
        &per_stage(|c| c.processing_ms as f64 / 1000.0),
    );
    let modules = super::tenants::module_names(&app).await?;
    tenant_metrics(&mut out, &app, &topics, &modules);
    kafka_metrics(&mut out, &app);
    Ok(([(CONTENT_TYPE, "text/plain; version=0.0.4")], out))
}

/// The Kafka listener: connections, requests by API, bytes.
fn kafka_metrics(out: &mut String, app: &App) {
    let stats = &app.kafka.stats;
    let one = |value: f64| vec![(String::new(), value)];
    family(
        out,
        "weir_kafka_connections",
        "gauge",
        "Kafka client connections open now.",
        &one(stats.open_connections() as f64),
    );
    family(
        out,
        "weir_kafka_connections_total",
        "counter",
        "Kafka client connections accepted.",
        &one(stats.accepted_connections() as f64),
    );
    family(
        out,
        "weir_kafka_protocol_errors_total",
        "counter",
        "Kafka connections closed because the client broke the protocol.",
        &one(stats.broken_connections() as f64),
    );
    let requests: Vec<(String, f64)> = stats
        .requests()
        .into_iter()
        .map(|(api, count)| (format!("api=\"{api}\""), count as f64))
        .collect();
    family(
        out,
        "weir_kafka_requests_total",
        "counter",
        "Kafka requests received, by API.",
        &requests,
    );
    family(
        out,
        "weir_kafka_request_bytes_total",
        "counter",
        "Bytes of Kafka request frames.",
        &one(stats.request_bytes() as f64),
    );
    family(
        out,
        "weir_kafka_response_bytes_total",
        "counter",
        "Bytes of Kafka response frames.",
        &one(stats.response_bytes() as f64),
    );
}

/// Per tenant: what it uses and what its quotas allow.
fn tenant_metrics(out: &mut String, app: &App, topics: &[weir_log::TopicInfo], modules: &[String]) {
    let Some(tenants) = &app.tenants else {
        return;
    };
    let usages: Vec<(String, serde_json::Value)> = tenants
        .list()
        .into_iter()
        .map(|t| {
            let usage = super::tenants::usage(app, &Namespace::tenant(&t.name), topics, modules);
            (t.name, usage)
        })
        .collect();
    let samples = |field: &str, nested: Option<&str>| {
        usages
            .iter()
            .filter_map(|(tenant, usage)| {
                let value = match nested {
                    Some(outer) => &usage[outer][field],
                    None => &usage[field],
                };
                Some((format!("tenant=\"{}\"", label(tenant)), value.as_f64()?))
            })
            .collect::<Vec<_>>()
    };
    for (field, kind, help) in [
        (
            "storage_bytes",
            "gauge",
            "Bytes stored in the tenant's topics.",
        ),
        ("topics", "gauge", "The tenant's topics."),
        ("modules", "gauge", "The tenant's modules."),
        ("pipelines", "gauge", "The tenant's pipelines."),
        (
            "cpu_seconds",
            "counter",
            "CPU time of the tenant's operators.",
        ),
    ] {
        let name = format!("weir_tenant_{field}");
        family(out, &name, kind, help, &samples(field, None));
    }
    for field in [
        "storage_bytes",
        "produce_bytes_per_sec",
        "topics",
        "modules",
        "pipelines",
        "cpu_share",
    ] {
        let name = format!("weir_tenant_quota_{field}");
        let help = format!("The tenant's {field} quota (absent: unlimited).");
        family(out, &name, "gauge", &help, &samples(field, Some("quotas")));
    }
}
