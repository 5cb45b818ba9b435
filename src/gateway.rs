//! One party's gateway assembled from its configuration: store, record rules, gRPC services
//! behind the authorization layer, served over mutual TLS on a listener the caller binds.

use std::future::Future;
use std::sync::Arc;

use tokio::net::TcpListener;

use crate::api::authz::AuthzLayer;
use crate::api::pb::directory_service_server::DirectoryServiceServer;
use crate::api::pb::factor_service_server::FactorServiceServer;
use crate::api::pb::project_service_server::ProjectServiceServer;
use crate::api::{DirectoryApi, FactorApi, ProjectApi};
use crate::config::{Config, StoreConfig};
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
    #[error("gRPC server failed: {0}")]
    Serve(#[from] tonic::transport::Error),
}

/// A gateway ready to serve: everything that can fail on bad files has been checked.
pub struct Gateway {
    config: Config,
    records: Records,
    tls: Arc<rustls::ServerConfig>,
}

impl Gateway {
    /// Opens the store and loads the TLS material named in `config`.
    pub fn open(config: Config) -> Result<Self, GatewayError> {
        let tls = tls::server_config(&config.tls)?;
        let store: Arc<dyn Store> = match &config.store {
            StoreConfig::Sqlite { path } => Arc::new(SqliteStore::open(path)?),
        };
        let records = Records::new(store, config.party.clone(), config.federation.clone());
        Ok(Gateway {
            config,
            records,
            tls,
        })
    }

    pub fn records(&self) -> &Records {
        &self.records
    }

    /// Serves on `listener` until `shutdown` resolves, then stops accepting and lets in-flight
    /// calls finish.
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
        let limit = self.config.max_message_bytes;
        let records = self.records;
        let addr = listener
            .local_addr()
            .map(|a| a.to_string())
            .unwrap_or_default();
        tracing::info!(party = %self.config.party, addr = %addr, "gateway serving");
        tonic::transport::Server::builder()
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
                DirectoryServiceServer::new(DirectoryApi::new(records))
                    .max_decoding_message_size(limit),
            )
            .serve_with_incoming_shutdown(tls::incoming(listener, self.tls), shutdown)
            .await?;
        tracing::info!(party = %self.config.party, "gateway stopped");
        Ok(())
    }
}
