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

use crate::api::authz::AuthzLayer;
use crate::api::calls::CallLayer;
use crate::api::pb::audit_service_server::AuditServiceServer;
use crate::api::pb::directory_service_server::DirectoryServiceServer;
use crate::api::pb::factor_service_server::FactorServiceServer;
use crate::api::pb::federation_service_server::FederationServiceServer;
use crate::api::pb::project_service_server::ProjectServiceServer;
use crate::api::pb::watch_service_server::WatchServiceServer;
use crate::api::{AuditApi, DirectoryApi, FactorApi, FederationApi, ProjectApi, WatchApi};
use crate::audit::AuditLog;
use crate::config::Config;
use crate::exchange::ExchangeError;
use crate::exchange::inbound::{Inbound, PeerStatuses};
use crate::exchange::outbound::Outbound;
use crate::exchange::policy::SharingPolicy;
use crate::exchange::signing::SignatureVerifier;
use crate::identity::AccessPolicy;
use crate::identity::tls::{self, TlsError, TlsMaterial, TlsSource};
use crate::ops::OpsState;
use crate::ops::metrics::Metrics;
use crate::records::Records;
use crate::store::{NewAuditEvent, Store, StoreError};

/// How often the TLS files are checked for changes.
pub const TLS_RELOAD_INTERVAL: Duration = Duration::from_secs(1);

#[derive(Debug, thiserror::Error)]
pub enum GatewayError {
    #[error(transparent)]
    Tls(#[from] TlsError),
    #[error("cannot open the store: {0}")]
    Store(#[from] StoreError),
    #[error(transparent)]
    Exchange(#[from] ExchangeError),
    #[error("gRPC server failed: {0}")]
    Serve(#[from] tonic::transport::Error),
    #[error("cannot build the reflection service: {0}")]
    Reflection(String),
}

/// A gateway ready to serve: everything that can fail on bad files has been checked.
pub struct Gateway {
    config: Config,
    records: Records,
    tls_tx: watch::Sender<Arc<TlsMaterial>>,
    tls: TlsSource,
    verifier: Arc<SignatureVerifier>,
    inbound: Inbound,
    ops: Arc<OpsState>,
    /// False only in the benchmark that measures what auditing costs; no config reaches it.
    audit: bool,
}

impl Gateway {
    /// Opens the store and loads the TLS material named in `config`.
    pub async fn open(config: Config) -> Result<Self, GatewayError> {
        let material = TlsMaterial::load(&config.tls)?;
        let (tls_tx, tls) = watch::channel(Arc::new(material));
        let verifier = Arc::new(SignatureVerifier::new(tls.clone(), &config.trust_domain));
        let store: Arc<dyn Store> = crate::store::open(&config.store).await?;
        let records = Records::new(store, config.party.clone(), config.federation.clone());
        let inbound = Inbound::new(records.clone(), verifier.clone(), tls.clone());
        let ops = Arc::new(OpsState {
            party: config.party.clone(),
            federation: config.federation.clone(),
            metrics: Arc::new(Metrics::default()),
            peers: inbound.status(),
            tls: tls.clone(),
            store_up: AtomicBool::new(true),
            serving: AtomicBool::new(false),
            feed_position: AtomicU64::new(0),
            audit_head: AtomicU64::new(0),
        });
        Ok(Gateway {
            config,
            records,
            tls_tx,
            tls,
            verifier,
            inbound,
            ops,
            audit: true,
        })
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

    /// Replication state of each configured peer.
    pub fn peer_status(&self) -> PeerStatuses {
        self.inbound.status()
    }

    /// What the admin server shows (metrics, status).
    pub fn ops(&self) -> Arc<OpsState> {
        self.ops.clone()
    }

    /// Serves gRPC on `listener` (and the admin HTTP server on `admin`, if given), follows the
    /// configured peers and reloads changed TLS files, until `shutdown` resolves. Then health
    /// turns NOT_SERVING, pulling stops, live streams end, the listener closes and in-flight
    /// calls get `limits.shutdown_grace` to finish; the store is checkpointed last.
    pub async fn serve(
        self,
        listener: TcpListener,
        admin: Option<TcpListener>,
        shutdown: impl Future<Output = ()> + Send,
    ) -> Result<(), GatewayError> {
        let config = self.config;
        let policy = Arc::new(AccessPolicy {
            party: config.party.clone(),
            trust_domain: config.trust_domain.clone(),
            federation: config.federation.clone(),
            read_only_systems: config.read_only_systems.clone(),
        });
        let (stop_tx, stop_rx) = watch::channel(false);
        let mut background = self.inbound.spawn(&config.peers, stop_rx.clone());
        background.spawn(tls::reload_on_change(
            config.tls.clone(),
            self.tls_tx,
            TLS_RELOAD_INTERVAL,
            stop_rx.clone(),
        ));
        let (health_reporter, health_service) = tonic_health::server::health_reporter();
        background.spawn(crate::ops::health::monitor(
            health_reporter,
            self.records.store().clone(),
            self.ops.clone(),
            stop_rx.clone(),
        ));
        if let Some(admin) = admin {
            background.spawn(crate::ops::admin::serve(
                admin,
                self.ops.clone(),
                stop_rx.clone(),
            ));
        }
        let audit = self
            .audit
            .then(|| AuditLog::start(self.records.store().clone()));
        background.spawn(crate::audit::witness::publish(
            self.records.store().clone(),
            config.party.clone(),
            config.peers.clone(),
            self.tls.clone(),
            config.witness_interval,
            stop_rx.clone(),
        ));
        let refused_audit = audit.clone();
        let refused_metrics = self.ops.metrics.clone();
        let on_refused: tls::RefusedHandshake = Arc::new(move |remote, reason| {
            refused_metrics.handshake_refused();
            let Some(log) = &refused_audit else { return };
            log.record(NewAuditEvent {
                time: crate::records::now_micros(),
                caller: format!("unknown ({remote})"),
                method: "tls-handshake".into(),
                records: Vec::new(),
                code: "UNAUTHENTICATED".into(),
                request_id: reason,
            });
        });
        // Referral answers that arrived just before a crash are settled now.
        if let Err(e) = self.records.settle_referrals().await {
            tracing::warn!(error = %e, "settling referrals at start failed");
        }

        fn reflection(
            b: tonic_reflection::server::Builder<'static>,
        ) -> tonic_reflection::server::Builder<'static> {
            b.register_encoded_file_descriptor_set(crate::api::pb::FILE_DESCRIPTOR_SET)
                .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
        }
        let reflection_v1 = reflection(tonic_reflection::server::Builder::configure())
            .build_v1()
            .map_err(|e| GatewayError::Reflection(e.to_string()))?;
        let reflection_v1alpha = reflection(tonic_reflection::server::Builder::configure())
            .build_v1alpha()
            .map_err(|e| GatewayError::Reflection(e.to_string()))?;

        let outbound = Outbound::new(
            self.records.clone(),
            Arc::new(SharingPolicy::new(&config.share)),
            self.tls.clone(),
            stop_rx.clone(),
        );
        let limit = config.max_message_bytes;
        let records = self.records;
        let party = config.party.clone();
        let addr = listener
            .local_addr()
            .map(|a| a.to_string())
            .unwrap_or_default();
        tracing::info!(party = %party, addr = %addr, peers = config.peers.len(), "gateway serving");
        let (drain_tx, drain_rx) = tokio::sync::oneshot::channel::<()>();
        let server = tonic::transport::Server::builder()
            .layer(CallLayer::new(self.ops.metrics.clone(), audit, config.limits.clone()))
            .layer(AuthzLayer::new(policy))
            .add_service(health_service)
            .add_service(reflection_v1)
            .add_service(reflection_v1alpha)
            .add_service(ProjectServiceServer::new(ProjectApi::new(records.clone())).max_decoding_message_size(limit))
            .add_service(FactorServiceServer::new(FactorApi::new(records.clone())).max_decoding_message_size(limit))
            .add_service(
                DirectoryServiceServer::new(DirectoryApi::new(records.clone())).max_decoding_message_size(limit),
            )
            .add_service(
                WatchServiceServer::new(WatchApi::new(records.clone(), stop_rx.clone()))
                    .max_decoding_message_size(limit),
            )
            .add_service(
                FederationServiceServer::new(FederationApi::new(
                    outbound,
                    party.clone(),
                    records.store().clone(),
                    self.verifier.clone(),
                ))
                .max_decoding_message_size(limit),
            )
            .add_service(AuditServiceServer::new(AuditApi::new(records.store().clone())).max_decoding_message_size(limit))
            .serve_with_incoming_shutdown(tls::incoming(listener, self.tls.clone(), Some(on_refused)), async {
                shutdown.await;
                tracing::info!(party = %party, grace_ms = config.limits.shutdown_grace.as_millis() as u64, "shutting down: draining calls");
                let _ = stop_tx.send(true);
                let _ = drain_tx.send(());
            });
        tokio::pin!(server);
        let grace = config.limits.shutdown_grace;
        let result = tokio::select! {
            r = &mut server => r,
            _ = async {
                let _ = drain_rx.await;
                tokio::time::sleep(grace).await;
            } => {
                tracing::warn!(party = %party, in_flight = self.ops.metrics.in_flight(), "grace period over; remaining calls are cut");
                Ok(())
            }
        };
        let _ = stop_tx.send(true);
        while background.join_next().await.is_some() {}
        if let Err(e) = records.store().checkpoint().await {
            tracing::warn!(error = %e, "store checkpoint at shutdown failed");
        }
        tracing::info!(party = %party, "gateway stopped");
        Ok(result?)
    }
}
