//! The baseline server: bare tonic serving only an echo, behind the same rustls acceptor and
//! certificates as a gateway, with none of the gateway's layers (authorization, limits, audit)
//! and no store. What the gateway costs on top of it is its own work.

use std::collections::HashMap;
use std::path::Path;

use anyhow::Context;
use tokio::net::TcpListener;

use crate::config::Config;
use crate::identity::tls::{self, TlsMaterial};

pub mod pb {
    tonic::include_proto!("yrd.bench.v1");
}

struct Echo;

#[tonic::async_trait]
impl pb::echo_service_server::EchoService for Echo {
    async fn echo(
        &self,
        request: tonic::Request<pb::EchoRequest>,
    ) -> Result<tonic::Response<pb::EchoResponse>, tonic::Status> {
        Ok(tonic::Response::new(pb::EchoResponse {
            payload: request.into_inner().payload,
        }))
    }
}

/// Serves the echo on the gRPC address and with the TLS files of the gateway config at
/// `config`, until the process is stopped. Prints `listening <addr>` on stdout once bound.
pub async fn serve(config: &Path) -> anyhow::Result<()> {
    let config = Config::load(config, &HashMap::new())?;
    let source = TlsMaterial::load(&config.tls)?.fixed();
    let listener = TcpListener::bind(config.listen_grpc)
        .await
        .with_context(|| format!("binding {}", config.listen_grpc))?;
    println!("listening {}", listener.local_addr()?);
    tonic::transport::Server::builder()
        .add_service(
            pb::echo_service_server::EchoServiceServer::new(Echo)
                .max_decoding_message_size(config.max_message_bytes),
        )
        .serve_with_incoming(tls::incoming(listener, source, None))
        .await?;
    Ok(())
}
