//! One party's gateway assembled from its configuration: store, record rules, exchange with
//! peers, gRPC services behind the authorization layer, served over mutual TLS on a listener
//! the caller binds.

use std::future::Future;
use std::sync::Arc;

use tokio::net::TcpListener;
use tokio::sync::watch;

use crate::api::authz::AuthzLayer;
use crate::api::pb::directory_service_server::DirectoryServiceServer;
use crate::api::pb::factor_service_server::FactorServiceServer;
use crate::api::pb::federation_service_server::FederationServiceServer;
use crate::api::pb::project_service_server::ProjectServiceServer;
use crate::api::pb::watch_service_server::WatchServiceServer;
use crate::api::{DirectoryApi, FactorApi, FederationApi, ProjectApi, WatchApi};
use crate::config::{Config, StoreConfig};
use crate::exchange::ExchangeError;
use crate::exchange::inbound::{Inbound, PeerStatuses};
use crate::exchange::outbound::Outbound;
use crate::exchange::policy::SharingPolicy;
use crate::exchange::signing::{ChangeSigner, SignatureVerifier};
use crate::identity::AccessPolicy;
use crate::identity::tls::{self, TlsError};
use crate::records::Records;
use crate::store::sqlite::SqliteStore;
use crate::store::{Store, StoreError};

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
}

/// A gateway ready to serve: everything that can fail on bad files has been checked.
pub struct Gateway {
    config: Config,
    records: Records,
    server_tls: Arc<rustls::ServerConfig>,
    signer: Arc<ChangeSigner>,
    inbound: Inbound,
}

impl Gateway {
    /// Opens the store and loads the TLS material named in `config`.
    pub fn open(config: Config) -> Result<Self, GatewayError> {
        let server_tls = tls::server_config(&config.tls)?;
        let client_tls = tls::client_config(&config.tls.ca, &config.tls.cert, &config.tls.key)?;
        let signer = Arc::new(ChangeSigner::from_files(&config.tls)?);
        let verifier = Arc::new(SignatureVerifier::new(
            &config.tls.ca,
            &config.trust_domain,
        )?);
        let store: Arc<dyn Store> = match &config.store {
            StoreConfig::Sqlite { path } => Arc::new(SqliteStore::open(path)?),
        };
        let records = Records::new(store, config.party.clone(), config.federation.clone());
        let inbound = Inbound::new(records.clone(), verifier, client_tls);
        Ok(Gateway {
            config,
            records,
            server_tls,
            signer,
            inbound,
        })
    }

    pub fn records(&self) -> &Records {
        &self.records
    }

    /// Replication state of each configured peer.
    pub fn peer_status(&self) -> PeerStatuses {
        self.inbound.status()
    }

    /// Serves on `listener`, and follows the configured peers, until `shutdown` resolves; then
    /// stops pulling, ends the live streams, stops accepting and lets in-flight calls finish.
    pub async fn serve(
        self,
        listener: TcpListener,
        shutdown: impl Future<Output = ()> + Send,
    ) -> Result<(), GatewayError> {
        let policy = Arc::new(AccessPolicy {
            party: self.config.party.clone(),
            trust_domain: self.config.trust_domain.clone(),
            federation: self.config.federation.clone(),
            read_only_systems: self.config.read_only_systems.clone(),
        });
        // Referral answers that arrived just before a crash are settled now.
        if let Err(e) = self.records.settle_referrals().await {
            tracing::warn!(error = %e, "settling referrals at start failed");
        }
        let (stop_tx, stop_rx) = watch::channel(false);
        let mut pullers = self.inbound.spawn(&self.config.peers, stop_rx.clone());
        let outbound = Outbound::new(
            self.records.clone(),
            Arc::new(SharingPolicy::new(&self.config.share)),
            self.signer.clone(),
            stop_rx.clone(),
        );
        let limit = self.config.max_message_bytes;
        let records = self.records;
        let party = self.config.party.clone();
        let addr = listener
            .local_addr()
            .map(|a| a.to_string())
            .unwrap_or_default();
        tracing::info!(party = %party, addr = %addr, peers = self.config.peers.len(), "gateway serving");
        let result = tonic::transport::Server::builder()
            .layer(AuthzLayer::new(policy))
            .add_service(
                ProjectServiceServer::new(ProjectApi::new(records.clone()))
                    .max_decoding_message_size(limit),
            )
            .add_service(
                FactorServiceServer::new(FactorApi::new(records.clone()))
                    .max_decoding_message_size(limit),
            )
            .add_service(
                DirectoryServiceServer::new(DirectoryApi::new(records.clone()))
                    .max_decoding_message_size(limit),
            )
            .add_service(
                WatchServiceServer::new(WatchApi::new(records.clone(), stop_rx.clone()))
                    .max_decoding_message_size(limit),
            )
            .add_service(
                FederationServiceServer::new(FederationApi::new(outbound, party.clone()))
                    .max_decoding_message_size(limit),
            )
            .serve_with_incoming_shutdown(tls::incoming(listener, self.server_tls), async {
                shutdown.await;
                let _ = stop_tx.send(true);
            })
            .await;
        let _ = stop_tx.send(true);
        while pullers.join_next().await.is_some() {}
        tracing::info!(party = %party, "gateway stopped");
        Ok(result?)
    }
}
