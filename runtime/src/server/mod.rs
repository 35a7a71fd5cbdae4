//! `weir serve`: one process with the log (embedded, or a NATS JetStream
//! cluster), the module store, the pipelines and the HTTP API.
//!
//! The data directory holds `log/` (the embedded log), `modules/` (uploaded
//! modules) and `pipelines/` (pipeline specs) — on a cluster these two are
//! in the cluster instead (see `weir_log::catalog`) — and `cache/`
//! (compiled modules).
//! Shutdown (Ctrl-C or SIGTERM) stops accepting requests, stops every
//! pipeline after its current commit and flushes the log.
//!
//! - [`topics`], [`records`], [`groups`], [`modules`], [`pipelines`]: the `/v1` API
//! - [`tenants`]: tenants and tokens; [`auth`]: credentials and namespaces
//! - [`cluster`]: `/v1/cluster`, the log backend and its health;
//!   [`brokers`]: the workers as Kafka brokers
//! - [`metrics`]: `/metrics`; [`error`]: how failures are answered

mod auth;
mod brokers;
mod cluster;
pub mod error;
mod groups;
mod metrics;
mod modules;
mod names;
mod pipelines;
mod records;
mod tenants;
mod topics;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use axum::Router;
use axum::extract::DefaultBodyLimit;
use axum::routing::{delete, get, post, put};
use serde::{Deserialize, Serialize};
use serde_json::json;
use tokio::net::TcpListener;

use weir_host::{CompileSettings, Compiler, Limits, OperatorEngine};
use weir_jetstream::{JetStreamConfig, JetStreamLog};
use weir_kafka::{
    GroupCoordinator, KafkaContext, KafkaListener, KafkaSettings, KafkaStats, Transactions,
};
use weir_log::{Catalog, DirCatalog, EmbeddedLog, StreamLog, Workers};
use weir_pipeline::lifecycle::SharedWork;
use weir_pipeline::modules::ModuleStore;
use weir_pipeline::scheduler::CpuScheduler;
use weir_pipeline::spec::PipelineSettings;
use weir_pipeline::{Pipelines, TenantModules};
use weir_tenancy::tenants::ADMIN_TOKEN_ENV;
use weir_tenancy::{QuotaChecks, Quotas, TenantDeletion, TenantResources, TenantTopics, Tenants};

/// The server's configuration (the `--config` TOML file; flags override).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ServerConfig {
    /// Default `./weir-data`.
    pub data_dir: PathBuf,
    /// Default `127.0.0.1:7070`.
    pub listen: SocketAddr,
    /// Largest request body for records and specs, in bytes. Default 16 MiB.
    pub max_request_bytes: usize,
    /// Limits for every operator instance.
    pub limits: Limits,
    /// Where uploaded modules are compiled, within which limits, and how
    /// many at once.
    pub compile: CompileSettings,
    /// Settings of pipeline tasks.
    pub pipelines: PipelineSettings,
    /// Tenants with their own tokens and namespaces; every request then
    /// needs a bearer token. Default off (one open namespace).
    pub tenancy: bool,
    /// The admin credential (or `WEIR_ADMIN_TOKEN`); without either, one
    /// is generated into `<data>/admin-token`.
    pub admin_token: Option<String>,
    /// Default quotas of every tenant (with tenancy on).
    pub quotas: Quotas,
    /// The Kafka listener.
    pub kafka: KafkaSettings,
    /// Where streams are kept: the embedded log (default) or a NATS
    /// JetStream cluster.
    pub log: LogBackend,
    /// This worker's name among those sharing a cluster (letters, digits,
    /// `-`, `_`, `.`). Default: the machine's name and a digest of the
    /// data directory's path.
    pub worker_id: Option<String>,
}

/// Which log the server keeps its streams in (`[log]`, `backend = ...`).
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(tag = "backend", rename_all = "lowercase")]
pub enum LogBackend {
    /// The embedded log, under `<data>/log`.
    #[default]
    Embedded,
    /// A NATS JetStream cluster (see `docs/cluster.md`).
    Jetstream(JetStreamConfig),
}

impl LogBackend {
    /// `settings` with this log's defaults: on a cluster, a task the log
    /// failed as unavailable starts again by itself after a second.
    fn pipeline_settings(&self, settings: PipelineSettings) -> PipelineSettings {
        match self {
            LogBackend::Jetstream(_) if settings.restart_after_unavailable_ms.is_none() => {
                PipelineSettings {
                    restart_after_unavailable_ms: Some(1000),
                    ..settings
                }
            }
            _ => settings,
        }
    }

    /// Opens the log this names and the catalog kept beside it (`dir`:
    /// the data directory).
    async fn open(
        &self,
        dir: &std::path::Path,
    ) -> anyhow::Result<(
        Arc<dyn StreamLog>,
        Arc<dyn Catalog>,
        Option<Arc<dyn Workers>>,
    )> {
        Ok(match self {
            LogBackend::Embedded => {
                let log = EmbeddedLog::open(dir.join("log"))
                    .await
                    .with_context(|| format!("while opening the log in {}", dir.display()))?;
                (Arc::new(log), Arc::new(DirCatalog::new(dir)), None)
            }
            LogBackend::Jetstream(cluster) => {
                let log = JetStreamLog::connect(cluster).await.with_context(|| {
                    format!(
                        "while connecting to the NATS JetStream cluster at {}",
                        cluster.servers.join(", ")
                    )
                })?;
                let (catalog, workers) = (log.catalog(), log.workers());
                (Arc::new(log), catalog, Some(workers))
            }
        })
    }
}

impl ServerConfig {
    /// This worker's id: as configured, or this machine's name and a
    /// digest of the data directory's path, so that a worker restarted
    /// over the same directory takes its tasks back at once (their leases
    /// are its own) and two workers of one machine differ.
    fn worker_id(&self) -> anyhow::Result<String> {
        use sha2::Digest;
        let id = match &self.worker_id {
            Some(id) => id.clone(),
            None => {
                let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
                    .unwrap_or_default()
                    .trim()
                    .replace(|c: char| !c.is_ascii_alphanumeric() && c != '-', "-");
                let dir = std::fs::canonicalize(&self.data_dir)
                    .with_context(|| format!("while resolving {}", self.data_dir.display()))?;
                let digest = sha2::Sha256::digest(dir.as_os_str().as_encoded_bytes());
                let host = if host.is_empty() {
                    "worker".to_string()
                } else {
                    host
                };
                format!("{host}-{}", &hex::encode(digest)[..12])
            }
        };
        let valid = !id.is_empty()
            && id
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'));
        anyhow::ensure!(
            valid,
            "worker_id {id:?} must be letters, digits, '-', '_' and '.'"
        );
        Ok(id)
    }
}

impl Default for ServerConfig {
    fn default() -> Self {
        ServerConfig {
            data_dir: PathBuf::from("weir-data"),
            listen: SocketAddr::from(([127, 0, 0, 1], 7070)),
            max_request_bytes: 16 << 20,
            limits: Limits::default(),
            compile: CompileSettings::default(),
            pipelines: PipelineSettings::default(),
            tenancy: false,
            admin_token: None,
            quotas: Quotas::default(),
            kafka: KafkaSettings::default(),
            log: LogBackend::default(),
            worker_id: None,
        }
    }
}

/// `GET /healthz`: 200 while the server can serve; 503 with the reason
/// while its log cannot (a cluster out of reach).
async fn healthz(
    axum::extract::State(app): axum::extract::State<App>,
) -> (axum::http::StatusCode, axum::Json<serde_json::Value>) {
    match app.log.health().await {
        Ok(()) => (
            axum::http::StatusCode::OK,
            axum::Json(json!({ "status": "ok" })),
        ),
        Err(e) => (
            axum::http::StatusCode::SERVICE_UNAVAILABLE,
            axum::Json(json!({ "status": "unavailable", "error": e.to_string() })),
        ),
    }
}

/// What every handler shares: the server's services, wired together in
/// [`Server::start`].
#[derive(Clone)]
pub struct App {
    pub log: Arc<dyn StreamLog>,
    pub modules: Arc<ModuleStore>,
    pub pipelines: Arc<Pipelines>,
    /// `None` when tenancy is off.
    pub tenants: Option<Arc<Tenants>>,
    /// Requests checked against the caller's quotas.
    pub quotas: Arc<QuotaChecks>,
    /// Shares operator CPU between tenants; also counts it.
    pub scheduler: Arc<CpuScheduler>,
    /// The Kafka protocol's services: its groups, transactions and
    /// counters, shown by the HTTP API too.
    pub kafka: KafkaContext,
    /// Deletes a tenant and everything it owns (`None` when tenancy is off).
    pub deletion: Option<Arc<TenantDeletion>>,
}

/// A started server: its address, and the parts to shut down.
pub struct Server {
    pub addr: SocketAddr,
    listener: TcpListener,
    /// The Kafka listener, unless it is off.
    pub kafka: Option<KafkaListener>,
    app: App,
    config: ServerConfig,
    /// Where the generated admin credential is, if one is in use.
    pub admin_token_file: Option<PathBuf>,
}

impl Server {
    /// Opens the data directory, starts the pipelines and binds the listener.
    pub async fn start(config: ServerConfig) -> anyhow::Result<Server> {
        let dir = &config.data_dir;
        std::fs::create_dir_all(dir)
            .with_context(|| format!("while creating the data directory {}", dir.display()))?;
        let (log, catalog, workers) = config.log.open(dir).await?;
        let sharing = workers.is_some();
        let engine = OperatorEngine::new(config.limits.clone(), Some(dir.join("cache")))
            .context("while starting the operator engine")?;
        let compiler = Compiler::new(config.compile.clone())?;
        let modules = Arc::new(ModuleStore::open(catalog.clone(), engine).with_compiler(compiler));
        let scheduler = CpuScheduler::new(0);
        let pipelines = Arc::new(
            Pipelines::open(
                log.clone(),
                catalog.clone(),
                modules.clone(),
                config.log.pipeline_settings(config.pipelines),
                scheduler.clone(),
                match workers {
                    Some(workers) => Some(SharedWork::new(workers, config.worker_id()?)),
                    None => None,
                },
            )
            .await
            .context("while starting the pipelines")?,
        );
        // The pipelines as the cluster has them, before the first request.
        pipelines.pass_now().await;
        tokio::spawn(pipelines.clone().share_work());
        let (tenants, admin_token_file) = if config.tenancy {
            let admin = config
                .admin_token
                .clone()
                .or_else(|| std::env::var(ADMIN_TOKEN_ENV).ok());
            let (tenants, file) = Tenants::open(catalog.clone(), dir, admin).await?;
            let tenants = Arc::new(tenants);
            if sharing {
                // Tokens issued or revoked through other workers.
                tokio::spawn(tenants.clone().follow(Duration::from_secs(1)));
            }
            (Some(tenants), file)
        } else {
            (None, None)
        };
        anyhow::ensure!(
            config.kafka.transactional_id_expiration_ms >= weir_kafka::MAX_TRANSACTION_TIMEOUT_MS,
            "kafka.transactional_id_expiration_ms must be at least {} (the longest transaction timeout)",
            weir_kafka::MAX_TRANSACTION_TIMEOUT_MS
        );
        let kafka_transactions = Transactions::start(
            log.clone(),
            dir.join("kafka").join("transactions"),
            Duration::from_millis(config.kafka.transactional_id_expiration_ms),
        )
        .await
        .context("while loading the Kafka transactions")?;
        let listener = TcpListener::bind(config.listen)
            .await
            .with_context(|| format!("while listening on {}", config.listen))?;
        let addr = listener.local_addr()?;
        let quotas = Arc::new(QuotaChecks::new(
            log.clone(),
            tenants.clone(),
            config.quotas,
        ));
        let kafka = KafkaContext {
            log: log.clone(),
            topic_users: pipelines.clone(),
            tenants: tenants.clone(),
            quotas: quotas.clone(),
            groups: GroupCoordinator::start(Duration::from_millis(
                config.kafka.group_initial_rebalance_delay_ms,
            )),
            transactions: kafka_transactions,
            stats: Arc::new(KafkaStats::default()),
            brokers: sharing.then(|| {
                Arc::new(brokers::WorkerBrokers(pipelines.clone())) as Arc<dyn weir_kafka::Brokers>
            }),
        };
        // The order in which a tenant's resources are deleted: pipelines
        // first (they read and write its topics), the produce-rate bucket
        // and CPU account last (see `weir_tenancy::deletion`).
        let deletion = tenants.clone().map(|tenants| {
            let holders: Vec<Arc<dyn TenantResources>> = vec![
                pipelines.clone(),
                Arc::new(TenantModules(modules.clone())),
                Arc::new(kafka.clone()),
                Arc::new(TenantTopics(log.clone())),
                quotas.clone(),
                scheduler.clone(),
            ];
            Arc::new(TenantDeletion::new(tenants, holders))
        });
        let app = App {
            log,
            modules,
            pipelines,
            tenants,
            quotas,
            scheduler,
            kafka,
            deletion,
        };
        let kafka = match config.kafka.enabled {
            true => Some(KafkaListener::bind(app.kafka.clone(), config.kafka.clone()).await?),
            false => None,
        };
        if let (Some(listener), Some(shared)) = (&kafka, app.pipelines.shared_work()) {
            let advertised = config.kafka.advertised.clone();
            shared.set_kafka_address(advertised.unwrap_or_else(|| listener.addr.to_string()));
        }
        Ok(Server {
            addr,
            listener,
            kafka,
            app,
            config,
            admin_token_file,
        })
    }

    /// The log interface the server's parts share.
    pub fn log(&self) -> Arc<dyn StreamLog> {
        self.app.log.clone()
    }

    /// Serves until `shutdown` resolves, then stops the pipelines and
    /// flushes the log.
    pub async fn run(
        self,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> anyhow::Result<()> {
        let router = router(self.app.clone(), &self.config);
        // Both listeners stop on the same signal.
        let (stop, stopped) = tokio::sync::watch::channel(false);
        let kafka = self.kafka.map(|kafka| {
            let mut stopped = stopped.clone();
            tokio::spawn(kafka.run(async move {
                let _ = stopped.wait_for(|stop| *stop).await;
            }))
        });
        let http = axum::serve(self.listener, router).with_graceful_shutdown(async move {
            shutdown.await;
            let _ = stop.send(true);
        });
        http.await.context("while serving HTTP")?;
        if let Some(kafka) = kafka {
            let _ = kafka.await;
        }
        tracing::info!("shutting down: stopping pipelines");
        self.app.pipelines.shutdown().await;
        self.app
            .log
            .close()
            .await
            .context("while flushing the log")?;
        tracing::info!("shut down cleanly");
        Ok(())
    }
}

fn router(app: App, config: &ServerConfig) -> Router {
    // Uploads stream their body and enforce the module size limit
    // themselves (`modules.rs`), outside the request body limit.
    let modules = Router::new().route(
        "/v1/modules/{name}",
        put(modules::put).get(modules::get).delete(modules::delete),
    );
    Router::new()
        .route("/v1/topics", post(topics::create).get(topics::list))
        .route(
            "/v1/topics/{name}",
            get(topics::describe).delete(topics::delete),
        )
        .route(
            "/v1/topics/{name}/records",
            post(records::produce).get(records::read),
        )
        .route("/v1/cluster", get(cluster::status))
        .route("/v1/groups", get(groups::list))
        .route(
            "/v1/groups/{name}",
            get(groups::describe).delete(groups::delete),
        )
        .route("/v1/modules", get(modules::list))
        .route("/v1/pipelines", get(pipelines::list))
        .route(
            "/v1/pipelines/{name}",
            put(pipelines::apply)
                .get(pipelines::status)
                .delete(pipelines::delete),
        )
        .route("/v1/pipelines/{name}/pause", post(pipelines::pause))
        .route("/v1/pipelines/{name}/resume", post(pipelines::resume))
        .route("/v1/tenants", post(tenants::create).get(tenants::list))
        .route(
            "/v1/tenants/{name}",
            get(tenants::get).delete(tenants::delete),
        )
        .route("/v1/tenants/{name}/tokens", post(tenants::issue_token))
        .route("/v1/usage", get(tenants::own_usage))
        .route(
            "/v1/tenants/{name}/tokens/{id}",
            delete(tenants::revoke_token),
        )
        .route("/metrics", get(metrics::metrics))
        .route("/healthz", get(healthz))
        .layer(DefaultBodyLimit::max(config.max_request_bytes))
        .merge(modules)
        .fallback(|| async {
            error::ApiError::not_found("no such endpoint (the API is under /v1)")
        })
        .method_not_allowed_fallback(|| async {
            error::ApiError::new(
                axum::http::StatusCode::METHOD_NOT_ALLOWED,
                "this endpoint does not take that method",
            )
        })
        .layer(axum::middleware::from_fn_with_state(
            app.clone(),
            auth::authenticate,
        ))
        .with_state(app)
}
