//! `yrd-gateway dev`: the four-party federation on loopback in one process, with a development
//! PKI and one SQLite store per party under a data folder. The config files it runs from are
//! written there too, so `yrd-gateway serve --config` can run any one of them the same way.
//!
//! `yrd-gateway dev add-party` adds a party to a running dev federation the way an operator
//! adds one to a deployment: certificates from the same CA, its `[[parties]]` and `[[peers]]`
//! entries appended to every other party's config file (which their running gateways pick up
//! within a second), a config file for the new party, and the party list in
//! `federation.toml` of the data folder, which `dev` runs from at its next start.

use std::collections::HashMap;
use std::future::Future;
use std::path::{Path, PathBuf};

use anyhow::Context;
use tokio::net::TcpListener;

use crate::config::{Config, ConfigTemplate, DEFAULT_TRUST_DOMAIN, LogFormat};
use crate::domain::{Federation, PartyInfo};
use crate::gateway::Gateway;

#[derive(Debug, clap::Args)]
pub struct DevArgs {
    /// Folder for certificates, configs and stores (created if missing; reused on restart);
    /// default `data/dev`, in the gm profile `data/dev-gm`.
    #[arg(long)]
    pub data_dir: Option<PathBuf>,
    /// Crypto profile of the federation: intl, or gm (RFC 8998 TLS, SM2, SM3).
    #[arg(long, default_value = "intl")]
    pub profile: crate::crypto::Profile,
    /// gRPC port of the first party; the others follow in party order.
    #[arg(long, default_value_t = 50051)]
    pub grpc_port_base: u16,
    /// Admin HTTP port (metrics, status page) of the first party; the others follow.
    #[arg(long, default_value_t = 9091)]
    pub admin_port_base: u16,
    #[command(subcommand)]
    pub action: Option<DevAction>,
}

#[derive(Debug, clap::Subcommand)]
pub enum DevAction {
    /// Add a party to the dev federation (running or not) and write its config; start its
    /// gateway with `yrd-gateway serve --config DATA_DIR/ID.toml`.
    AddParty {
        /// Party id (a-z, 0-9, '-').
        id: String,
        #[arg(long)]
        display_name: String,
        #[arg(long)]
        province: String,
        /// GB/T 2260 division code, if the party has one of its own.
        #[arg(long, default_value = "")]
        division_code: String,
    },
}

impl DevArgs {
    /// The folder of the dev federation.
    pub fn data_dir(&self) -> PathBuf {
        self.data_dir.clone().unwrap_or_else(|| match self.profile {
            crate::crypto::Profile::Intl => PathBuf::from("data/dev"),
            crate::crypto::Profile::Gm => PathBuf::from("data/dev-gm"),
        })
    }
}

/// The party list of the dev federation in `data`: `federation.toml` there once a party was
/// added, else the shipped four.
pub(super) fn dev_federation(data: &Path) -> anyhow::Result<Federation> {
    let path = data.join("federation.toml");
    match std::fs::read_to_string(&path) {
        Ok(text) => super::federation_from_toml(&text)
            .with_context(|| format!("reading the dev party list {}", path.display())),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(super::default_federation()),
        Err(e) => Err(e).with_context(|| format!("reading {}", path.display())),
    }
}

/// The config of `party` in the dev federation `federation`, every other party a peer.
fn dev_config(args: &DevArgs, federation: &Federation, party: &str) -> anyhow::Result<String> {
    let ids: Vec<&str> = federation.parties().iter().map(|p| p.id.as_str()).collect();
    let i = ids
        .iter()
        .position(|p| *p == party)
        .context("not a dev party")?;
    let mut peers = Vec::new();
    for (j, peer) in ids.iter().enumerate() {
        if j != i {
            peers.push((peer.to_string(), port(args.grpc_port_base, j)?));
        }
    }
    let template = ConfigTemplate {
        party: party.to_string(),
        trust_domain: DEFAULT_TRUST_DOMAIN.into(),
        listen_grpc: port(args.grpc_port_base, i)?,
        listen_admin: port(args.admin_port_base, i)?,
        certs_dir: "certs".into(),
        crl: None,
        store_path: format!("{party}/store.db"),
        postgres_url: None,
        log_format: LogFormat::Text,
        federation: federation.clone(),
        peers,
        default_catalog: true,
        profile: args.profile,
        keys: true,
    };
    template.make_keys(&args.data_dir())?;
    Ok(template.render())
}

/// The loopback address of port `base + i`.
fn port(base: u16, i: usize) -> anyhow::Result<String> {
    let port = u16::try_from(i)
        .ok()
        .and_then(|i| base.checked_add(i))
        .context("port base too high")?;
    Ok(format!("127.0.0.1:{port}"))
}

/// Writes `text` to `path` whole: a gateway reading the file meanwhile sees the old or the
/// new file, never half of one.
fn replace_file(path: &Path, text: &str) -> anyhow::Result<()> {
    let partial = path.with_extension("toml.partial");
    std::fs::write(&partial, text).with_context(|| format!("writing {}", partial.display()))?;
    std::fs::rename(&partial, path).with_context(|| format!("replacing {}", path.display()))
}

/// `dev add-party`: see the module documentation.
pub fn add_party(args: &DevArgs, party: PartyInfo) -> anyhow::Result<()> {
    let data = &args.data_dir();
    let before = dev_federation(data)?;
    anyhow::ensure!(
        !before.contains(&party.id),
        "`{}` is already a party of the dev federation in {}",
        party.id,
        data.display()
    );
    let id = party.id.clone();
    let mut parties = before.parties().to_vec();
    parties.push(party.clone());
    let after = Federation::new(parties).map_err(|e| anyhow::anyhow!("{e}"))?;
    crate::identity::pki::init_dev_pki(
        &data.join("certs"),
        DEFAULT_TRUST_DOMAIN,
        std::slice::from_ref(&id),
        args.profile,
    )?;
    let address = port(args.grpc_port_base, before.parties().len())?;
    // The others' files get the new entries appended: what an operator would add by hand.
    for other in before.parties() {
        let path = data.join(format!("{}.toml", other.id));
        let text = std::fs::read_to_string(&path)
            .with_context(|| format!("reading {} (run `yrd-gateway dev` first)", path.display()))?;
        let added = format!(
            "{text}\n# Added by `yrd-gateway dev add-party {id}`.\n{}",
            super::party_and_peer_toml(&party, &address)
        );
        replace_file(&path, &added)?;
    }
    let own = data.join(format!("{id}.toml"));
    replace_file(
        &own,
        &format!(
            "# Written by `yrd-gateway dev add-party {id}`.\n{}",
            dev_config(args, &after, &id)?
        ),
    )?;
    replace_file(
        &data.join("federation.toml"),
        &super::federation_toml(&after),
    )?;
    say!("{id} added to the dev federation in {}:", data.display());
    say!("  certificates   {}/certs/{id}/", data.display());
    say!("  config         {}", own.display());
    say!(
        "  the other {} parties' configs now list {id}; their running gateways pick that up within a second",
        before.parties().len()
    );
    say!(
        "start its gateway:  yrd-gateway serve --config {}",
        own.display()
    );
    Ok(())
}

/// Runs the dev federation until `shutdown` resolves.
pub async fn run(
    args: DevArgs,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> anyhow::Result<()> {
    let data = &args.data_dir();
    std::fs::create_dir_all(data).with_context(|| format!("creating {}", data.display()))?;
    let federation = dev_federation(data)?;
    let ids: Vec<String> = federation.parties().iter().map(|p| p.id.clone()).collect();
    crate::identity::pki::init_dev_pki(
        &data.join("certs"),
        DEFAULT_TRUST_DOMAIN,
        &ids,
        args.profile,
    )?;

    let mut gateways = Vec::new();
    for party in &ids {
        let text = dev_config(&args, &federation, party)?;
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
    say!(
        "yrd-gateway dev: {}-party federation on loopback (Ctrl-C stops it)",
        ids.len()
    );
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
