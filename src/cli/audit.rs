//! `yrd-gateway audit`: offline verification of a gateway's audit chain (stopped or running),
//! cross-checks against heads its peers witnessed, verification of the evidence kept of every
//! change received from peers, and export-then-prune for retention.
//!
//! Export format (`yrd-audit-export/1`), JSON lines: a header
//! `{"format":"yrd-audit-export/1","party":..,"anchor":{"seq":N,"hash":"hex"}|null,"through":M}`
//! then one event per line `{"seq","time","caller","method","records","code","request_id",
//! "prev_hash","hash"}` (times in microseconds since the epoch, hashes in hex). The first
//! event links to the header's anchor (or to 32 zero bytes); after `--prune` the store keeps
//! the last exported event as its anchor, so store and file together stay one chain.

use std::sync::Arc;

use std::io::{BufRead, Write};
use std::path::{Path, PathBuf};

use anyhow::{Context, bail};
use serde::{Deserialize, Serialize};

use crate::audit::{ChainVerifier, EventPages, hex, verify_chain};
use crate::config::Config;
use crate::exchange::evidence::{EvidenceError, verify_evidence};
use crate::store::StoreConfig;
use crate::store::{AuditAnchor, AuditEvent, NewAuditEvent, Store};

#[derive(Debug, clap::Subcommand)]
pub enum AuditCommand {
    /// Prove the store's chain intact, or name the first bad event (exit code 1).
    Verify {
        #[arg(long, value_name = "FILE")]
        config: PathBuf,
        /// Also compare with the signed heads each configured peer witnessed.
        #[arg(long)]
        with_witnesses: bool,
    },
    /// Write events up to --through to a file (and, with --prune, remove them from the store).
    Export {
        #[arg(long, value_name = "FILE")]
        config: PathBuf,
        /// Last sequence number to export.
        #[arg(long)]
        through: u64,
        #[arg(long, value_name = "FILE")]
        out: PathBuf,
        #[arg(long)]
        prune: bool,
    },
    /// Prove that every change applied from each configured peer is what that peer signed
    /// (the kept envelope, signer certificate and signature or signed manifest), or name the
    /// first change whose evidence does not (exit code 1).
    VerifyEvidence {
        #[arg(long, value_name = "FILE")]
        config: PathBuf,
    },
    /// Verify an export file on its own.
    VerifyExport {
        #[arg(value_name = "FILE")]
        file: PathBuf,
    },
}

async fn open_store(config: &Config) -> anyhow::Result<Arc<dyn Store>> {
    if let StoreConfig::Sqlite { path } = &config.store {
        // Checking a chain must not create an empty store where the operator mistyped a path.
        anyhow::ensure!(path.exists(), "no store at {}", path.display());
    }
    Ok(crate::gateway::open_sealed(config, false).await?)
}

#[derive(Serialize, Deserialize)]
struct Header {
    format: String,
    party: String,
    anchor: Option<HexAnchor>,
    through: u64,
}

#[derive(Serialize, Deserialize)]
struct HexAnchor {
    seq: u64,
    hash: String,
}

#[derive(Serialize, Deserialize)]
struct Line {
    seq: u64,
    time: i64,
    caller: String,
    method: String,
    records: Vec<String>,
    code: String,
    request_id: String,
    prev_hash: String,
    hash: String,
    /// The hash the event was linked with, `sha256` or `sm3`; absent in exports written
    /// before events kept theirs (SHA-256).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    digest: Option<String>,
}

fn unhex(s: &str) -> anyhow::Result<Vec<u8>> {
    // Checked before slicing: an edited export may hold any character (found by fuzz::).
    anyhow::ensure!(s.is_ascii() && s.len() % 2 == 0, "not hex: `{s}`");
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&s[i..i + 2], 16).context("bad hex"))
        .collect()
}

const FORMAT: &str = "yrd-audit-export/1";

/// "1 change", "2 changes".
fn count(n: u64, noun: &str) -> String {
    if n == 1 {
        format!("1 {noun}")
    } else {
        format!("{n} {noun}s")
    }
}

/// Runs an audit command; `Ok(false)` when the chain is not intact.
pub async fn run(
    command: AuditCommand,
    env: &std::collections::HashMap<String, String>,
) -> anyhow::Result<bool> {
    match command {
        AuditCommand::Verify {
            config,
            with_witnesses,
        } => {
            let config = Config::load(&config, env)?;
            let store = open_store(&config).await?;
            let summary = match verify_chain(&*store).await {
                Ok(s) => s,
                Err(crate::audit::AuditError::Broken(b)) => {
                    say!("audit chain BROKEN: {b}");
                    return Ok(false);
                }
                Err(e) => return Err(e.into()),
            };
            match &summary.head {
                Some(h) => say!(
                    "audit chain intact: {} events verified ({}), head {} {}",
                    summary.events,
                    summary.digests(),
                    h.seq,
                    hex(&h.hash)
                ),
                None => say!("audit chain intact: empty"),
            }
            if !with_witnesses {
                return Ok(true);
            }
            let material = crate::identity::tls::TlsMaterial::load(&config.tls)?.fixed();
            let verifier = crate::exchange::signing::SignatureVerifier::new(
                material.clone(),
                &config.trust_domain,
            );
            let mut heads = Vec::new();
            for result in crate::audit::witness::collect_heads(
                &config.party,
                &config.peers,
                material,
                &verifier,
            )
            .await
            {
                match result {
                    Ok((peer, held)) => {
                        say!(
                            "{peer} holds {} signed heads of {}",
                            held.len(),
                            config.party
                        );
                        heads.extend(held.into_iter().map(|h| (peer.clone(), h)));
                    }
                    Err(e) => say!("warning: cannot ask {e}"),
                }
            }
            let found = crate::audit::witness::contradictions(&*store, &heads).await?;
            for c in &found {
                say!("CONTRADICTED: {c}");
            }
            if found.is_empty() {
                say!("no witnessed head contradicts the local chain");
            }
            Ok(found.is_empty())
        }
        AuditCommand::Export {
            config,
            through,
            out,
            prune,
        } => {
            let config = Config::load(&config, env)?;
            let store = open_store(&config).await?;
            if let Err(e) = verify_chain(&*store).await {
                bail!("refusing to export: {e}");
            }
            let anchor = store.audit_anchor().await?;
            export(&*store, &config.party, anchor, through, &out).await?;
            say!("exported events through {through} to {}", out.display());
            if prune {
                let anchor = store.prune_audit(through).await?;
                say!(
                    "pruned; the store's chain continues from {} {}",
                    anchor.seq,
                    hex(&anchor.hash)
                );
            }
            Ok(true)
        }
        AuditCommand::VerifyEvidence { config } => {
            let config = Config::load(&config, env)?;
            let store = open_store(&config).await?;
            let material = crate::identity::tls::TlsMaterial::load(&config.tls)?.fixed();
            let verifier =
                crate::exchange::signing::SignatureVerifier::new(material, &config.trust_domain);
            let mut intact = true;
            for peer in &config.peers {
                let owner = &peer.party;
                match verify_evidence(&*store, &verifier, owner, &config.party).await {
                    Ok(s) => say!(
                        "{owner}: evidence of {} verified ({} through {}, {} signed one by one; {} with items erased when a grant ended)",
                        count(s.changes, "change"),
                        s.by_manifest,
                        count(s.manifests, "signed manifest"),
                        s.changes - s.by_manifest,
                        s.erased
                    ),
                    Err(EvidenceError::Bad { seq, reason }) => {
                        say!("{owner}: evidence BAD at change {seq}: {reason}");
                        intact = false;
                    }
                    Err(EvidenceError::Store(e)) => return Err(e.into()),
                }
            }
            Ok(intact)
        }
        AuditCommand::VerifyExport { file } => verify_export(&file),
    }
}

async fn export(
    store: &dyn Store,
    party: &str,
    anchor: Option<AuditAnchor>,
    through: u64,
    out: &Path,
) -> anyhow::Result<()> {
    let file = std::fs::File::create(out).with_context(|| format!("creating {}", out.display()))?;
    let mut w = std::io::BufWriter::new(file);
    let header = Header {
        format: FORMAT.into(),
        party: party.into(),
        anchor: anchor.as_ref().map(|a| HexAnchor {
            seq: a.seq,
            hash: hex(&a.hash),
        }),
        through,
    };
    writeln!(w, "{}", serde_json::to_string(&header)?)?;
    let mut pages = EventPages::after(store, anchor.map_or(0, |a| a.seq));
    let mut last = pages.position();
    while let Some(page) = pages.next().await? {
        for e in page.into_iter().filter(|e| e.seq <= through) {
            last = e.seq;
            let line = Line {
                seq: e.seq,
                time: e.event.time,
                caller: e.event.caller,
                method: e.event.method,
                records: e.event.records,
                code: e.event.code,
                request_id: e.event.request_id,
                prev_hash: hex(&e.prev_hash),
                hash: hex(&e.hash),
                digest: Some(e.digest.name().to_string()),
            };
            writeln!(w, "{}", serde_json::to_string(&line)?)?;
        }
        if pages.position() >= through {
            break;
        }
    }
    anyhow::ensure!(
        last == through,
        "the chain ends at {last}, before {through}"
    );
    w.flush()?;
    w.into_inner().map_err(|e| e.into_error())?.sync_all()?;
    Ok(())
}

fn verify_export(file: &Path) -> anyhow::Result<bool> {
    let reader = std::io::BufReader::new(
        std::fs::File::open(file).with_context(|| format!("opening {}", file.display()))?,
    );
    match check_export(reader.lines())? {
        Ok((party, summary)) => {
            say!(
                "export intact: {} events of {party} ({}), through {}",
                summary.events,
                summary.digests(),
                summary.head.map_or(0, |h| h.seq)
            );
            Ok(true)
        }
        Err(broken) => {
            say!("export BROKEN: {broken}");
            Ok(false)
        }
    }
}

/// Reads an export's lines: an error when they are not an export at all; otherwise the party
/// and what verified, or why the chain is broken.
pub(crate) fn check_export(
    mut lines: impl Iterator<Item = std::io::Result<String>>,
) -> anyhow::Result<Result<(String, crate::audit::ChainSummary), String>> {
    let header: Header =
        serde_json::from_str(&lines.next().context("empty file")??).context("bad header")?;
    anyhow::ensure!(header.format == FORMAT, "not a {FORMAT} file");
    let anchor = match header.anchor {
        Some(a) => Some(AuditAnchor {
            seq: a.seq,
            hash: unhex(&a.hash)?,
        }),
        None => None,
    };
    let mut verifier = ChainVerifier::new(anchor.as_ref());
    for line in lines {
        let l: Line = serde_json::from_str(&line?)?;
        let event = AuditEvent {
            seq: l.seq,
            event: NewAuditEvent {
                time: l.time,
                caller: l.caller,
                method: l.method,
                records: l.records,
                code: l.code,
                request_id: l.request_id,
            },
            prev_hash: unhex(&l.prev_hash)?,
            hash: unhex(&l.hash)?,
            digest: match &l.digest {
                None => crate::crypto::Digest::Sha256,
                Some(name) => crate::crypto::Digest::parse(name)
                    .with_context(|| format!("event {}: unknown digest `{name}`", l.seq))?,
            },
        };
        if let Err(b) = verifier.check(&event) {
            return Ok(Err(b.to_string()));
        }
    }
    Ok(Ok((header.party, verifier.summary())))
}
