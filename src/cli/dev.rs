//! `yrd-gateway dev`: the four-party federation on loopback in one process, with a development
//! PKI and one SQLite store per party under a data folder. The config files it runs from are
//! written there too, so `yrd-gateway serve --config` can run any one of them the same way.

use std::collections::HashMap;
use std::future::Future;
use std::path::PathBuf;

use anyhow::Context;
use tokio::net::TcpListener;

use crate::config::{Config, ConfigTemplate, DEFAULT_TRUST_DOMAIN, LogFormat};
use crate::gateway::Gateway;

#[derive(Debug, clap::Args)]
pub struct DevArgs {
    /// Folder for certificates, configs and stores (created if missing; reused on restart).
    #[arg(long, default_value = "data/dev")]
    pub data_dir: PathBuf,
    /// gRPC port of the first party; the others follow in party order.
    #[arg(long, default_value_t = 50051)]
    pub grpc_port_base: u16,
    /// Admin HTTP port (metrics, status page) of the first party; the others follow.
    #[arg(long, default_value_t = 9091)]
    pub admin_port_base: u16,
}

/// Runs the dev federation until `shutdown` resolves.
pub async fn run(
    args: DevArgs,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> anyhow::Result<()> {
    let data = &args.data_dir;
    std::fs::create_dir_all(data).with_context(|| format!("creating {}", data.display()))?;
    let federation = super::default_federation();
    let ids: Vec<String> = federation.parties().iter().map(|p| p.id.clone()).collect();
    crate::identity::pki::init_dev_pki(&data.join("certs"), DEFAULT_TRUST_DOMAIN, &ids)?;
    let port = |base: u16, i: usize| -> anyhow::Result<String> {
        let port = base.checked_add(i as u16).context("port base too high")?;
        Ok(format!("127.0.0.1:{port}"))
    };
    let address = |i: usize| port(args.grpc_port_base, i);

    let mut gateways = Vec::new();
    for (i, party) in ids.iter().enumerate() {
        let mut peers = Vec::new();
        for (j, peer) in ids.iter().enumerate() {
            if j != i {
                peers.push((peer.clone(), address(j)?));
            }
        }
        let text = ConfigTemplate {
            party: party.clone(),
            trust_domain: DEFAULT_TRUST_DOMAIN.into(),
            listen_grpc: address(i)?,
            listen_admin: port(args.admin_port_base, i)?,
            certs_dir: "certs".into(),
            crl: None,
            store_path: format!("{party}/store.db"),
            postgres_url: None,
            log_format: LogFormat::Text,
            federation: federation.clone(),
            peers,
            default_catalog: true,
        }
        .render();
        let path = data.join(format!("{party}.toml"));
        std::fs::write(
            &path,
            format!("# Written by `yrd-gateway dev`; rewritten on every start.\n{text}"),
        )
        .with_context(|| format!("writing {}", path.display()))?;
        let config = Config::load(&path, &HashMap::new())?;
        let listener = TcpListener::bind(config.listen_grpc)
            .await
            .with_context(|| format!("binding {} for {party}", config.listen_grpc))?;
        let admin = TcpListener::bind(config.admin_listen)
            .await
            .with_context(|| format!("binding {} for {party}'s admin http", config.admin_listen))?;
        let gateway = Gateway::open(config).await?;
        gateways.push((party.clone(), listener, admin, gateway));
    }

    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let stop_tx = std::sync::Arc::new(stop_tx);
    let mut tasks = tokio::task::JoinSet::new();
    say!("yrd-gateway dev: four-party federation on loopback (Ctrl-C stops it)");
    for (party, listener, admin, gateway) in gateways {
        say!(
            "  {party:<10} grpc {}   status http://{}/   config {}/{party}.toml",
            listener.local_addr()?,
            admin.local_addr()?,
            data.display()
        );
        let mut stop = stop_rx.clone();
        tasks.spawn(async move {
            let result = gateway
                .serve(listener, Some(admin), async move {
                    let _ = stop.wait_for(|s| *s).await;
                })
                .await;
            (party, result)
        });
    }
    say!(
        "try:  yrd-gateway client --data-dir {} --party zone whoami",
        data.display()
    );

    let on_signal = stop_tx.clone();
    tokio::spawn(async move {
        shutdown.await;
        let _ = on_signal.send(true);
    });
    let mut failed = None;
    while let Some(joined) = tasks.join_next().await {
        let (party, result) = joined.context("gateway task panicked")?;
        if let Err(e) = result {
            tracing::error!(party = %party, error = %e, "gateway failed");
            failed.get_or_insert(anyhow::anyhow!("{party}: {e}"));
            // One party down means the federation is not what the operator asked for: stop all.
            let _ = stop_tx.send(true);
        }
    }
    failed.map_or(Ok(()), Err)
}
