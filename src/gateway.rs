//! One party's gateway assembled from its configuration: store, record rules, exchange with
//! peers, gRPC services behind the call and authorization layers, health and reflection, the
//! admin HTTP server, TLS material reloaded when its files change — served over mutual TLS on
//! listeners the caller binds.

use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64};
use std::time::Duration;

use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::task::JoinSet;
use tonic::transport::server::Router;
use tower::layer::util::{Identity, Stack};

use crate::api::authz::AuthzLayer;
use crate::api::calls::CallLayer;
use crate::api::{
    AccessApi, AuditApi, CatalogApi, DirectoryApi, FactorApi, FederationApi, ProjectApi, WatchApi,
};
use crate::audit::AuditLog;
use crate::config::Config;
use crate::exchange::ExchangeError;
use crate::exchange::inbound::{Inbound, PeerStatuses};
use crate::exchange::outbound::Outbound;
use crate::exchange::policy::SharingPolicy;
use crate::exchange::signing::SignatureVerifier;
use crate::identity::AccessPolicy;
use crate::identity::tls::{self, TlsError, TlsMaterial, TlsSource};
use crate::membership::Membership;
use crate::membership::reload::{Live, Peers};
use crate::ops::OpsState;
use crate::ops::metrics::Metrics;
use crate::records::{Feed, Records};
use crate::sharing::Sharing;
use crate::store::{NewAuditEvent, Store, StoreError};
use crate::wire::pb::access_service_server::AccessServiceServer;
use crate::wire::pb::audit_service_server::AuditServiceServer;
use crate::wire::pb::catalog_service_server::CatalogServiceServer;
use crate::wire::pb::directory_service_server::DirectoryServiceServer;
use crate::wire::pb::factor_service_server::FactorServiceServer;
use crate::wire::pb::federation_service_server::FederationServiceServer;
use crate::wire::pb::project_service_server::ProjectServiceServer;
use crate::wire::pb::watch_service_server::WatchServiceServer;

/// The gRPC server's layers, outermost first in the builder: HTTP/JSON, calls, authorization.
type Layers = Stack<AuthzLayer, Stack<CallLayer, Stack<crate::http_json::HttpJsonLayer, Identity>>>;

/// How often the TLS files are checked for changes.
pub const TLS_RELOAD_INTERVAL: Duration = Duration::from_secs(1);
/// How often the configuration file is checked for changes (party list and peers).
pub const CONFIG_RELOAD_INTERVAL: Duration = Duration::from_secs(1);

#[derive(Debug, thiserror::Error)]
pub enum GatewayError {
    #[error(transparent)]
    Tls(#[from] TlsError),
    #[error("cannot open the store: {0}")]
    Store(#[from] StoreError),
    #[error(transparent)]
    Exchange(#[from] ExchangeError),
    #[error("keys of data at rest: {0}")]
    Keys(#[from] crate::vault::VaultError),
    #[error("gRPC server failed: {0}")]
    Serve(#[from] tonic::transport::Error),
    #[error("cannot build the reflection service: {0}")]
    Reflection(String),
    #[error("cannot read or publish the catalog: {0}")]
    Catalog(String),
    #[error("cannot build the HTTP/JSON routes: {0}")]
    HttpJson(String),
}

mod store;
pub use store::open_sealed;
use store::open_vault_and_store;

/// A gateway ready to serve: everything that can fail on bad files has been checked.
pub struct Gateway {
    config: Config,
    /// The whole store, for the parts of the gateway that are not record rules: the audit
    /// trail, witnessing, health and the checkpoint at shutdown.
    store: Arc<dyn Store>,
    records: Records,
    /// The change feed, handed to Watch, the outbound streams and the inbound pullers.
    feed: Feed,
    tls_tx: watch::Sender<Arc<TlsMaterial>>,
    tls: TlsSource,
    verifier: Arc<SignatureVerifier>,
    inbound: Inbound,
    ops: Arc<OpsState>,
    /// The senders of the party list and peers, until `serve` hands them to the reader of
    /// the configuration file.
    live: Option<Live>,
    /// The peers as they are now.
    peers: Peers,
    /// False only in the benchmark that measures what auditing costs; no config reaches it.
    audit: bool,
}

impl Gateway {
    /// Opens the store and loads the TLS material named in `config`.
    pub async fn open(config: Config) -> Result<Self, GatewayError> {
        let material = TlsMaterial::load(&config.tls)?;
        let (tls_tx, tls) = watch::channel(Arc::new(material));
        let verifier = Arc::new(SignatureVerifier::new(tls.clone(), &config.trust_domain));
        let (store, vault) = open_vault_and_store(&config, true).await?;
        let feed = Feed::new(store.clone());
        let (live, members, peers) = Live::new(&config);
        let records = Records::new(
            store.clone(),
            feed.clone(),
            config.party.clone(),
            members.clone(),
        )
        .with_deadlines(config.deadlines.clone());
        let membership = Arc::new(Membership::new(members.clone(), config.tls.profile));
        let inbound = Inbound::new(records.clone(), feed.clone(), verifier.clone(), tls.clone())
            .with_idle_limit(config.limits.peer_idle_timeout)
            .with_membership(membership.clone());
        let ops = Arc::new(OpsState {
            party: config.party.clone(),
            members: members.clone(),
            reloads: Arc::default(),
            metrics: Arc::new(Metrics::default()),
            peers: inbound.status(),
            tls: tls.clone(),
            store_up: AtomicBool::new(true),
            serving: AtomicBool::new(false),
            feed_position: AtomicU64::new(0),
            audit_head: AtomicU64::new(0),
            access_overdue_to_answer: AtomicU64::new(0),
            access_overdue_awaiting: AtomicU64::new(0),
            erasures_done: AtomicU64::new(0),
            erasures_failed: AtomicU64::new(0),
            feed: feed.clone(),
            taken_back: AtomicU64::new(0),
            take_back_failed: AtomicU64::new(0),
            take_back_problem: std::sync::Mutex::default(),
            membership: membership.clone(),
            vault,
        });
        Ok(Gateway {
            config,
            store,
            records,
            feed,
            tls_tx,
            tls,
            verifier,
            inbound,
            ops,
            live: Some(live),
            peers,
            audit: true,
        })
    }

    /// Reads the time from `clock` wherever the record rules and the sharing decisions need it
    /// (deadlines, grant ends, what is sent and kept), so a test can move time forward.
    pub fn with_clock(mut self, clock: crate::records::Clock) -> Self {
        self.records = self.records.with_clock(clock);
        self.inbound = self.inbound.with_records(self.records.clone());
        self
    }

    /// Serves without the audit trail. Exists so `bench audit-cost` can measure the cost of
    /// auditing in one run; deployments always audit (no configuration key reaches this).
    pub fn without_audit_for_benchmark(mut self) -> Self {
        self.audit = false;
        self
    }

    pub fn records(&self) -> &Records {
        &self.records
    }

    /// The gateway's store (benchmarks and tools read it directly).
    pub fn store(&self) -> &Arc<dyn Store> {
        &self.store
    }

    /// Replication state of each configured peer.
    pub fn peer_status(&self) -> PeerStatuses {
        self.inbound.status()
    }

    /// What the admin server shows (metrics, status).
    pub fn ops(&self) -> Arc<OpsState> {
        self.ops.clone()
    }

    /// Publishes the default catalog where it applies, then reads this party's sharing view
    /// (its catalog entries and the grants it gave), which decides what peers receive.
    async fn sharing(&self) -> Result<Arc<Sharing>, GatewayError> {
        let failed = |e: crate::records::RecordError| GatewayError::Catalog(e.to_string());
        if self.config.default_catalog {
            match crate::sharing::seed_default_catalog(&self.records).await {
                Ok(_) => {}
                // A restored store holds writes until its peers gave back what it wrote after
                // the backup; the entries it lacks are published at the next start.
                Err(crate::records::RecordError::Held { message }) => tracing::warn!(
                    reason = %message,
                    "default catalog entries not published now"
                ),
                Err(e) => return Err(failed(e)),
            }
        }
        Sharing::load(self.records.clone(), self.feed.clone())
            .await
            .map_err(failed)
    }

    /// Serves gRPC on `listener` (and the admin HTTP server on `admin`, if given), follows the
    /// configured peers and reloads changed TLS files, until `shutdown` resolves. Then health
    /// turns NOT_SERVING, pulling stops, live streams end, the listener closes and in-flight
    /// calls get `limits.shutdown_grace` to finish; the store is checkpointed last.
    pub async fn serve(
        mut self,
        listener: TcpListener,
        admin: Option<TcpListener>,
        shutdown: impl Future<Output = ()> + Send,
    ) -> Result<(), GatewayError> {
        // Before anything that writes (the erasure pass, the default catalog) starts.
        self.hold_writes_if_restored().await?;
        let (stop_tx, stop_rx) = watch::channel(false);
        let (health_reporter, health_service) = tonic_health::server::health_reporter();
        let audit = self.audit.then(|| AuditLog::start(self.store.clone()));
        let mut background = self.spawn_background(admin, health_reporter, &stop_rx, &audit);
        self.spawn_record_keepers(&mut background, &stop_rx, &audit);
        let on_refused = self.on_refused_handshake(audit.clone());
        // Referral answers that arrived just before a crash are settled now.
        if let Err(e) = self.records.settle_referrals().await {
            tracing::warn!(error = %e, "settling referrals at start failed");
        }
        let router = self
            .router(audit, &stop_rx)
            .await?
            .add_service(health_service);
        let config = &self.config;
        let party = config.party.clone();
        let addr = listener
            .local_addr()
            .map(|a| a.to_string())
            .unwrap_or_default();
        tracing::info!(party = %party, addr = %addr, peers = self.peers.borrow().len(), "gateway serving");
        let (drain_tx, drain_rx) = tokio::sync::oneshot::channel::<()>();
        let grace = config.limits.shutdown_grace;
        let incoming = tls::incoming_with(
            listener,
            self.tls.clone(),
            Some(on_refused),
            config.limits.handshakes,
            Some(self.on_shed()),
        );
        let server = router.serve_with_incoming_shutdown(incoming, async {
            shutdown.await;
            tracing::info!(party = %party, grace_ms = grace.as_millis() as u64, "shutting down: draining calls");
            let _ = stop_tx.send(true);
            let _ = drain_tx.send(());
        });
        let result = within_grace(server, drain_rx, grace, &self.ops).await;
        let _ = stop_tx.send(true);
        while background.join_next().await.is_some() {}
        if let Err(e) = self.store.checkpoint().await {
            tracing::warn!(error = %e, "store checkpoint at shutdown failed");
        }
        tracing::info!(party = %self.config.party, "gateway stopped");
        Ok(result?)
    }

    /// A store restored from a backup holds writes until every peer has given back what it
    /// holds of this party's change log ([`crate::exchange::recovery`]).
    async fn hold_writes_if_restored(&self) -> Result<(), GatewayError> {
        if let Some(time) = self.store.restored_mark().await? {
            tracing::warn!(
                restored_at = time,
                "this store was restored from a backup: writes are held until every peer has given back what it holds of this party's change log"
            );
            self.feed
                .hold_until_checked(self.config.peers.iter().map(|p| p.party.clone()));
        }
        Ok(())
    }

    /// Starts the tasks that keep this party's records as they should be until `stop`: the
    /// config file followed for party and peer changes, erasure of what ended grants covered,
    /// and the take-back of this party's own changes after a restore.
    fn spawn_record_keepers(
        &mut self,
        background: &mut JoinSet<()>,
        stop: &watch::Receiver<bool>,
        audit: &Option<AuditLog>,
    ) {
        if let (Some(source), Some(live)) = (self.config.source.clone(), self.live.take()) {
            background.spawn(crate::membership::reload::follow(
                source,
                self.config.clone(),
                live,
                self.ops.reloads.clone(),
                CONFIG_RELOAD_INTERVAL,
                stop.clone(),
            ));
        }
        background.spawn(crate::sharing::erasure::run(
            self.records.clone(),
            self.feed.clone(),
            self.on_erased(audit.clone()),
            stop.clone(),
        ));
        background.spawn(
            crate::exchange::recovery::Recovery::new(
                self.records.clone(),
                self.feed.clone(),
                self.verifier.clone(),
                self.tls.clone(),
                self.config.peers.clone(),
                self.on_taken_back(audit.clone()),
            )
            .run(stop.clone()),
        );
    }

    /// Who may call what (SPEC §2), from this party's config and the live party list.
    fn access_policy(&self) -> Arc<AccessPolicy> {
        Arc::new(AccessPolicy {
            party: self.config.party.clone(),
            trust_domain: self.config.trust_domain.clone(),
            members: self.records.members().clone(),
            read_only_systems: self.config.read_only_systems.clone(),
            profile: self.config.tls.profile,
        })
    }

    /// The owner's side of the federation service: this party's change log served to peers,
    /// filtered by its catalog and grants and signed.
    async fn outbound(&self, stop: &watch::Receiver<bool>) -> Result<Outbound, GatewayError> {
        Ok(Outbound::new(
            self.config.party.clone(),
            self.feed.clone(),
            Arc::new(SharingPolicy::with_coordinator(&self.config.coordinator)),
            self.sharing().await?,
            self.tls.clone(),
            stop.clone(),
            self.ops.membership.clone(),
        ))
    }

    /// The gRPC server's settings, its layers (HTTP/JSON outermost, then the call layer, then
    /// authorization) and every service but health, each with the configured message limit.
    async fn router(
        &self,
        audit: Option<AuditLog>,
        stop: &watch::Receiver<bool>,
    ) -> Result<Router<Layers>, GatewayError> {
        let (reflection_v1, reflection_v1alpha) = reflection_services()?;
        let outbound = self.outbound(stop).await?;
        let config = &self.config;
        let limit = config.max_message_bytes;
        let records = &self.records;
        let http_json = crate::http_json::HttpJsonLayer::new(config.limits.clone(), limit)
            .map_err(GatewayError::HttpJson)?;
        let router = tonic::transport::Server::builder()
            // HTTP/1.1 too, for the HTTP/JSON surface (gRPC itself needs HTTP/2).
            .accept_http1(true)
            // One connection holds no more streams than the gateway admits calls in all; more
            // are refused by HTTP/2 itself (REFUSED_STREAM) before any work.
            .max_concurrent_streams(u32::try_from(config.limits.max_concurrent_calls).ok())
            // A request's header list (gRPC metadata included) is at most 16 KiB — hyper's
            // default, pinned here so an upgrade cannot loosen it. It also bounds a header
            // block sent in endless CONTINUATION frames: h2 ends such a connection
            // (GOAWAY ENHANCE_YOUR_CALM) once the block passes it.
            .http2_max_header_list_size(16 * 1024)
            // Outermost: an HTTP/JSON request becomes its gRPC call before the call layer.
            .layer(http_json)
            .layer(CallLayer::new(
                self.ops.metrics.clone(),
                audit,
                config.limits.clone(),
            ))
            .layer(AuthzLayer::new(self.access_policy()))
            .add_service(reflection_v1)
            .add_service(reflection_v1alpha)
            .add_service(
                ProjectServiceServer::new(ProjectApi::new(records.clone()))
                    .max_decoding_message_size(limit),
            )
            .add_service(
                FactorServiceServer::new(FactorApi::new(records.clone()))
                    .max_decoding_message_size(limit),
            )
            .add_service(
                DirectoryServiceServer::new(DirectoryApi::new(
                    records.clone(),
                    self.ops.membership.clone(),
                ))
                .max_decoding_message_size(limit),
            )
            .add_service(
                CatalogServiceServer::new(CatalogApi::new(records.clone()))
                    .max_decoding_message_size(limit),
            )
            .add_service(
                AccessServiceServer::new(AccessApi::new(records.clone()))
                    .max_decoding_message_size(limit),
            )
            .add_service(
                WatchServiceServer::new(WatchApi::new(
                    records.clone(),
                    self.feed.clone(),
                    stop.clone(),
                ))
                .max_decoding_message_size(limit),
            )
            .add_service(
                FederationServiceServer::new(FederationApi::new(
                    outbound,
                    self.feed.clone(),
                    config.party.clone(),
                    self.store.clone(),
                    self.verifier.clone(),
                ))
                .max_decoding_message_size(limit),
            )
            .add_service(
                AuditServiceServer::new(AuditApi::new(self.store.clone()))
                    .max_decoding_message_size(limit),
            );
        Ok(router)
    }

    /// Starts what runs beside the gRPC server until `stop`: the peer pullers, TLS reloading,
    /// health following the store, the admin HTTP server, the count of overdue access
    /// requests and chain-head witnessing.
    fn spawn_background(
        &self,
        admin: Option<TcpListener>,
        health: tonic_health::server::HealthReporter,
        stop: &watch::Receiver<bool>,
        audit: &Option<AuditLog>,
    ) -> JoinSet<()> {
        let config = &self.config;
        let mut inbound = self.inbound.clone();
        if let Some(log) = audit.clone() {
            inbound = inbound.with_on_refused(Arc::new(move |peer, refusal| {
                log.record(NewAuditEvent {
                    time: crate::domain::now_micros(),
                    caller: format!("gateway (changes of {peer})"),
                    method: "exchange/refuse".into(),
                    records: vec![format!("parties/{peer}")],
                    code: "INVALID_ARGUMENT".into(),
                    request_id: refusal.to_string(),
                });
            }));
        }
        let mut background = JoinSet::new();
        background.spawn(inbound.follow_peers(
            self.peers.clone(),
            self.records.members().clone(),
            stop.clone(),
        ));
        background.spawn(tls::reload_on_change(
            config.tls.clone(),
            self.tls_tx.clone(),
            TLS_RELOAD_INTERVAL,
            stop.clone(),
        ));
        background.spawn(crate::ops::health::monitor(
            health,
            self.store.clone(),
            self.ops.clone(),
            stop.clone(),
        ));
        if let Some(admin) = admin {
            background.spawn(crate::ops::admin::serve(
                admin,
                self.ops.clone(),
                stop.clone(),
            ));
        }
        background.spawn(crate::ops::sharing::monitor(
            self.records.clone(),
            self.ops.clone(),
            stop.clone(),
        ));
        background.spawn(crate::audit::witness::publish(
            self.store.clone(),
            config.party.clone(),
            self.peers.clone(),
            self.records.members().clone(),
            self.tls.clone(),
            config.witness_interval,
            stop.clone(),
        ));
        background
    }

    /// What happens after an attempt to take this party's changes back from its peers:
    /// counted, and audited when auditing is on, as a call of the gateway itself.
    fn on_taken_back(&self, audit: Option<AuditLog>) -> crate::exchange::recovery::OnTakenBack {
        use std::sync::atomic::Ordering::Relaxed;
        let ops = self.ops.clone();
        let party = self.config.party.clone();
        Arc::new(move |outcome| {
            let (code, detail) = match outcome {
                Ok(t) => {
                    ops.taken_back.fetch_add(t.head - t.from_head, Relaxed);
                    let mut problems = t
                        .refused
                        .iter()
                        .map(|why| format!("refused {why}"))
                        .collect::<Vec<_>>();
                    problems.extend(
                        t.unreachable
                            .iter()
                            .map(|peer| format!("{peer} could not be asked")),
                    );
                    problems.extend(t.stopped.clone());
                    if !problems.is_empty() {
                        ops.take_back_failed.fetch_add(1, Relaxed);
                        *ops.take_back_problem
                            .lock()
                            .unwrap_or_else(|e| e.into_inner()) = Some(problems.join("; "));
                    }
                    if t.head == t.from_head && t.stopped.is_none() && t.refused.is_empty() {
                        // Nothing taken back, nothing missing: no event (a peer that is down
                        // is retried, counted and logged).
                        return;
                    }
                    let code = if !t.refused.is_empty() {
                        "INVALID_ARGUMENT"
                    } else if t.stopped.is_some() {
                        "INCOMPLETE"
                    } else {
                        "OK"
                    };
                    let mut detail = if t.head == t.from_head {
                        format!("no change taken back after {}", t.head)
                    } else {
                        format!(
                            "changes {}..{} taken back from {}; {} with items emptied",
                            t.from_head + 1,
                            t.head,
                            t.peers.join(", "),
                            t.with_items_emptied
                        )
                    };
                    if let Some(why) = &t.stopped {
                        detail.push_str("; stopped: ");
                        detail.push_str(why);
                    }
                    for why in &t.refused {
                        detail.push_str("; refused: ");
                        detail.push_str(why);
                    }
                    (code, detail)
                }
                Err(e) => {
                    ops.take_back_failed.fetch_add(1, Relaxed);
                    *ops.take_back_problem
                        .lock()
                        .unwrap_or_else(|e| e.into_inner()) = Some(e.clone());
                    ("UNAVAILABLE", e.clone())
                }
            };
            let Some(log) = &audit else { return };
            log.record(NewAuditEvent {
                time: crate::domain::now_micros(),
                caller: "gateway (store restored)".into(),
                method: "exchange/take-back".into(),
                records: vec![format!("parties/{party}")],
                code: code.into(),
                request_id: detail,
            });
        })
    }

    /// What happens when this gateway erased data of a grant that ended: counted, and audited
    /// when auditing is on, as a call of the gateway itself; a failed pass is counted.
    fn on_erased(&self, audit: Option<AuditLog>) -> crate::sharing::erasure::OnErased {
        let ops = self.ops.clone();
        Arc::new(move |outcome| {
            let (request, receipt) = match outcome {
                Ok(done) => done,
                Err(_) => {
                    ops.erasures_failed
                        .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                    return;
                }
            };
            ops.erasures_done
                .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            let Some(log) = &audit else { return };
            log.record(NewAuditEvent {
                time: receipt.time,
                caller: "gateway (grant ended)".into(),
                method: "sharing/erase".into(),
                records: vec![request.to_string()],
                code: "OK".into(),
                request_id: format!(
                    "{}: {} erased in {} records, {} log entries, {} kept envelopes",
                    receipt.cause,
                    receipt.items.join(", "),
                    receipt.records,
                    receipt.log_entries,
                    receipt.evidence
                ),
            });
        })
    }

    /// What happens when a TLS handshake is refused: counted, and audited when auditing is on.
    /// Connections closed before their handshake because a cap was reached: counted, and
    /// logged at most once a minute (a flood must not flood the log or the audit trail).
    fn on_shed(&self) -> tls::ShedConnection {
        let metrics = self.ops.metrics.clone();
        let last_logged = Arc::new(std::sync::Mutex::new(None::<std::time::Instant>));
        Arc::new(move |remote, why| {
            let total = metrics.connection_shed();
            let mut last = last_logged.lock().unwrap_or_else(|e| e.into_inner());
            if last.is_none_or(|t| t.elapsed() >= Duration::from_secs(60)) {
                *last = Some(std::time::Instant::now());
                tracing::warn!(remote = %remote, reason = why, shed_so_far = total, "closing connections before their TLS handshake");
            }
        })
    }

    fn on_refused_handshake(&self, audit: Option<AuditLog>) -> tls::RefusedHandshake {
        let metrics = self.ops.metrics.clone();
        Arc::new(move |remote, reason| {
            metrics.handshake_refused();
            let Some(log) = &audit else { return };
            log.record(NewAuditEvent {
                time: crate::domain::now_micros(),
                caller: format!("unknown ({remote})"),
                method: "tls-handshake".into(),
                records: Vec::new(),
                code: "UNAUTHENTICATED".into(),
                request_id: reason,
            });
        })
    }
}

/// Server reflection (v1 and v1alpha) over every proto this gateway serves, for grpcurl.
fn reflection_services() -> Result<
    (
        tonic_reflection::server::v1::ServerReflectionServer<
            impl tonic_reflection::server::v1::ServerReflection,
        >,
        tonic_reflection::server::v1alpha::ServerReflectionServer<
            impl tonic_reflection::server::v1alpha::ServerReflection,
        >,
    ),
    GatewayError,
> {
    fn reflection(
        b: tonic_reflection::server::Builder<'static>,
    ) -> tonic_reflection::server::Builder<'static> {
        b.register_encoded_file_descriptor_set(crate::wire::pb::FILE_DESCRIPTOR_SET)
            .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
    }
    let v1 = reflection(tonic_reflection::server::Builder::configure())
        .build_v1()
        .map_err(|e| GatewayError::Reflection(e.to_string()))?;
    let v1alpha = reflection(tonic_reflection::server::Builder::configure())
        .build_v1alpha()
        .map_err(|e| GatewayError::Reflection(e.to_string()))?;
    Ok((v1, v1alpha))
}

/// Runs `server` to its end, but once shutdown began (`drained` fired) for at most `grace`:
/// calls still in flight then are cut.
async fn within_grace(
    server: impl Future<Output = Result<(), tonic::transport::Error>>,
    drained: tokio::sync::oneshot::Receiver<()>,
    grace: Duration,
    ops: &OpsState,
) -> Result<(), tonic::transport::Error> {
    tokio::pin!(server);
    tokio::select! {
        r = &mut server => r,
        _ = async {
            let _ = drained.await;
            tokio::time::sleep(grace).await;
        } => {
            tracing::warn!(party = %ops.party, in_flight = ops.metrics.in_flight(), "grace period over; remaining calls are cut");
            Ok(())
        }
    }
}
