//! Replication from a hostile peer or through a hostile path: altered or wrongly signed
//! changes, a hostile owner's consistent lies (another owner, gaps, replays, wrong hashes),
//! and a gigantic or silent stream. A relay stands in the path and alters what it forwards.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU8, Ordering};

use prost::Message;
use tokio_stream::StreamExt;
use tonic::{Request, Response, Status};
use yrd_gateway::cli::audit::AuditCommand;
use yrd_gateway::exchange::evidence::{EvidenceError, verify_evidence};
use yrd_gateway::exchange::signing::SignatureVerifier;
use yrd_gateway::identity::signer::ChangeSigner;
use yrd_gateway::identity::tls;
use yrd_gateway::identity::tls::TlsPaths;
use yrd_gateway::store::sqlite::SqliteStore;
use yrd_gateway::wire::pb;
use yrd_gateway::wire::pb::federation_service_client::FederationServiceClient;
use yrd_gateway::wire::pb::federation_service_server::{
    FederationService, FederationServiceServer,
};

use crate::common::*;

use super::{WAIT, replicated};

/// What the tampering relay does to the changes it forwards.
const PASS: u8 = 0;
const FLIP_BYTE: u8 = 1;
const WRONG_KEY: u8 = 2;
/// The modes below re-sign what they change with the owner's own key (the relay holds it, as a
/// compromised or buggy owner would): only the receiver's consistency checks can refuse them.
/// Envelopes naming another owner.
const OTHER_OWNER: u8 = 3;
/// The first change of a response left out: a sequence gap.
const GAP: u8 = 4;
/// The first response with changes sent again instead of the current one.
const REPLAY: u8 = 5;
/// A manifest listing a hash that is not the envelope's.
const WRONG_HASH: u8 = 6;
/// Nothing forwarded: the stream stays open and silent (a stalled or trickling peer).
const STALL: u8 = 7;
/// A response larger than a receiver accepts (65 MiB).
const GIANT: u8 = 8;

/// Stands between guangde and the zone, terminating TLS as the zone (the test holds its key),
/// pulling the genuine stream from the zone as guangde, and altering it on demand.
struct Relay {
    upstream: FederationServiceClient<tonic::transport::Channel>,
    mode: Arc<AtomicU8>,
    wrong_signer: Arc<ChangeSigner>,
    /// The zone's own key, to re-sign what the owner-signed modes change.
    owner_signer: Arc<ChangeSigner>,
    /// The first response that carried changes, for `REPLAY`.
    first_response: Arc<std::sync::Mutex<Option<pb::PullChangesResponse>>>,
    /// Asks the zone for changes signed one by one, as an owner that predates manifests sends.
    legacy: bool,
}

/// Applies `edit` to a manifest-signed response's changes and manifest, then signs the
/// manifest again with `signer`.
fn resign(
    response: &mut pb::PullChangesResponse,
    signer: &ChangeSigner,
    edit: impl FnOnce(&mut Vec<pb::SignedChange>, &mut pb::ChangeManifest),
) {
    let Some(signed) = &mut response.manifest else {
        return;
    };
    let mut manifest = pb::ChangeManifest::decode(signed.manifest.as_slice()).unwrap();
    edit(&mut response.changes, &mut manifest);
    signed.manifest = manifest.encode_to_vec();
    let (scheme, signature) = signer.sign(&signed.manifest).unwrap();
    signed.scheme = u32::from(scheme);
    signed.signature = signature;
}

fn sha256(bytes: &[u8]) -> Vec<u8> {
    use sha2::{Digest, Sha256};
    Sha256::digest(bytes).to_vec()
}

type RelayStream = std::pin::Pin<
    Box<dyn tokio_stream::Stream<Item = Result<pb::PullChangesResponse, Status>> + Send>,
>;

#[tonic::async_trait]
impl FederationService for Relay {
    type PullChangesStream = RelayStream;
    type ReturnChangesStream = std::pin::Pin<
        Box<dyn tokio_stream::Stream<Item = Result<pb::ReturnChangesResponse, Status>> + Send>,
    >;

    async fn return_changes(
        &self,
        _request: Request<pb::ReturnChangesRequest>,
    ) -> Result<Response<Self::ReturnChangesStream>, Status> {
        Err(Status::unimplemented(
            "the test relay forwards changes only",
        ))
    }

    async fn pull_changes(
        &self,
        request: Request<pb::PullChangesRequest>,
    ) -> Result<Response<RelayStream>, Status> {
        let mut request = request.into_inner();
        if self.legacy {
            request.accept_manifests = false;
        }
        let upstream = self
            .upstream
            .clone()
            .pull_changes(request)
            .await?
            .into_inner();
        let mode = self.mode.clone();
        let wrong = self.wrong_signer.clone();
        let owner = self.owner_signer.clone();
        let first_response = self.first_response.clone();
        let stream = upstream.filter_map(move |item| {
            let mut response = match item {
                Ok(r) => r,
                Err(e) => return Some(Err(e)),
            };
            if !response.changes.is_empty() {
                let mut first = first_response.lock().unwrap();
                if first.is_none() {
                    *first = Some(response.clone());
                }
            }
            let altering = !response.changes.is_empty() && response.manifest.is_some();
            match mode.load(Ordering::SeqCst) {
                OTHER_OWNER if altering => resign(&mut response, &owner, |changes, manifest| {
                    manifest.envelope_sha256.clear();
                    for change in changes.iter_mut() {
                        let mut envelope =
                            pb::ChangeEnvelope::decode(change.envelope.as_slice()).unwrap();
                        envelope.owner = "changxing".into();
                        change.envelope = envelope.encode_to_vec();
                        manifest.envelope_sha256.push(sha256(&change.envelope));
                    }
                }),
                GAP if altering => resign(&mut response, &owner, |changes, manifest| {
                    changes.remove(0);
                    manifest.envelope_sha256.remove(0);
                    manifest.first_seq += 1;
                }),
                REPLAY if altering => {
                    let signer_certificate = std::mem::take(&mut response.signer_certificate);
                    response = first_response.lock().unwrap().clone().unwrap();
                    response.signer_certificate = signer_certificate;
                }
                WRONG_HASH if altering => resign(&mut response, &owner, |_, manifest| {
                    manifest.envelope_sha256[0][0] ^= 1;
                }),
                STALL => return None,
                GIANT => {
                    response.changes = vec![pb::SignedChange {
                        envelope: vec![0; 65 * 1024 * 1024],
                        ..Default::default()
                    }]
                }
                FLIP_BYTE => {
                    if let Some(first) = response.changes.first_mut() {
                        let last = first.envelope.len() - 1;
                        first.envelope[last] ^= 0x01;
                    }
                }
                WRONG_KEY => {
                    if !response.signer_certificate.is_empty() {
                        response.signer_certificate = wrong.certificate().to_vec();
                    }
                    if let Some(manifest) = &mut response.manifest {
                        let (scheme, signature) = wrong.sign(&manifest.manifest).unwrap();
                        manifest.scheme = u32::from(scheme);
                        manifest.signature = signature;
                    }
                    for change in &mut response.changes {
                        if !change.signature.is_empty() {
                            let (scheme, signature) = wrong.sign(&change.envelope).unwrap();
                            change.scheme = u32::from(scheme);
                            change.signature = signature;
                        }
                    }
                }
                _ => {}
            }
            Some(Ok(response))
        });
        Ok(Response::new(Box::pin(stream)))
    }

    async fn witness_head(
        &self,
        _request: Request<pb::WitnessHeadRequest>,
    ) -> Result<Response<pb::WitnessHeadResponse>, Status> {
        Err(Status::unimplemented(
            "the test relay forwards changes only",
        ))
    }

    async fn list_witnessed_heads(
        &self,
        _request: Request<pb::ListWitnessedHeadsRequest>,
    ) -> Result<Response<pb::ListWitnessedHeadsResponse>, Status> {
        Err(Status::unimplemented(
            "the test relay forwards changes only",
        ))
    }
}

/// Serves a [`Relay`] to the zone on `listener`, as the zone, altering what it forwards as
/// `mode` says.
fn serve_relay(
    fed: &TestFederation,
    listener: tokio::net::TcpListener,
    mode: Arc<AtomicU8>,
    legacy: bool,
) {
    let relay = Relay {
        upstream: FederationServiceClient::new(
            tls::channel(
                &fed.addr("zone").to_string(),
                "localhost",
                fed.pki.client_config("guangde", "gateway"),
            )
            .unwrap(),
        ),
        mode,
        wrong_signer: Arc::new(
            ChangeSigner::from_files(&fed.pki.gateway_paths("changxing")).unwrap(),
        ),
        owner_signer: Arc::new(ChangeSigner::from_files(&fed.pki.gateway_paths("zone")).unwrap()),
        first_response: Arc::default(),
        legacy,
    };
    let server_tls = tls::TlsMaterial::load(&fed.pki.gateway_paths("zone"))
        .unwrap()
        .fixed();
    tokio::spawn(
        tonic::transport::Server::builder()
            .add_service(FederationServiceServer::new(relay))
            .serve_with_incoming(tls::incoming(listener, server_tls, None)),
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tampered_or_wrongly_signed_changes_are_refused_and_good_ones_still_arrive() {
    tampering_is_refused(false).await;
}

/// The same against an owner that signs each change (a gateway older than manifests).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn changes_signed_one_by_one_are_checked_the_same_way() {
    tampering_is_refused(true).await;
}

/// guangde pulls the zone's changes through a relay that alters them on demand.
async fn tampering_is_refused(legacy: bool) {
    let relay_listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let relay_addr = relay_listener.local_addr().unwrap().to_string();
    let options = Options {
        routes: HashMap::from([(("guangde".to_string(), "zone".to_string()), relay_addr)]),
        extra_toml: "[limits]\npeer_idle_timeout_ms = 1000\n".into(),
        // The evidence is read straight from the store file, as a third party would.
        in_clear: true,
        ..Options::default()
    };
    let fed = TestFederation::start_with(&["zone", "guangde"], options).await;
    let mode = Arc::new(AtomicU8::new(PASS));
    serve_relay(&fed, relay_listener, mode.clone(), legacy);

    let first = create(&fed, "zone", "before tampering").await;
    replicated(&fed, "guangde", &first.name).await;
    let guangde = &fed.gateways["guangde"];
    assert_eq!(guangde.peer("zone").refused, 0);

    mode.store(FLIP_BYTE, Ordering::SeqCst);
    let second = create(&fed, "zone", "altered in transit").await;
    eventually(WAIT, "a refusal of the altered change", || async {
        (guangde.peer("zone").refused >= 1).then_some(())
    })
    .await;
    assert!(
        try_get(&fed, "guangde", &second.name).await.is_none(),
        "an altered change was applied"
    );
    assert!(
        guangde
            .peer("zone")
            .last_error
            .unwrap()
            .contains("signature")
    );

    mode.store(WRONG_KEY, Ordering::SeqCst);
    let refused = guangde.peer("zone").refused;
    eventually(WAIT, "a refusal of the wrongly signed change", || async {
        let s = guangde.peer("zone");
        (s.refused > refused && s.last_error.as_deref().unwrap_or("").contains("signer"))
            .then_some(())
    })
    .await;
    assert!(
        try_get(&fed, "guangde", &second.name).await.is_none(),
        "a wrongly signed change was applied"
    );
    assert_eq!(guangde.peer("zone").cursor, DEFAULT_ENTRIES + 1);

    // Two changes wait from here on (a gap needs a change after the one left out).
    let extra = u64::from(!legacy);
    if !legacy {
        create(&fed, "zone", "waiting behind the refusals").await;
        // Signed with the owner's own key, yet inconsistent: each is refused by what the
        // receiver checks beyond signatures, and nothing of it is applied.
        for (alteration, expected) in [
            (OTHER_OWNER, "names owner `changxing`"),
            (GAP, "expected change"),
            (REPLAY, "expected change"),
            (WRONG_HASH, "is not the one the signed manifest lists"),
        ] {
            mode.store(alteration, Ordering::SeqCst);
            let refused = guangde.peer("zone").refused;
            eventually(
                WAIT,
                &format!("a refusal of alteration {alteration}"),
                || async {
                    let s = guangde.peer("zone");
                    (s.refused > refused).then_some(())
                },
            )
            .await;
            let error = guangde.peer("zone").last_error.unwrap_or_default();
            assert!(error.contains(expected), "alteration {alteration}: {error}");
            assert_eq!(guangde.peer("zone").cursor, DEFAULT_ENTRIES + 1, "{error}");
        }
        // Each refusal is in guangde's audit trail, with its reason.
        audit_events_until(
            &fed,
            "guangde",
            "exchange/refuse",
            "INVALID_ARGUMENT",
            |events| {
                events
                    .iter()
                    .any(|e| e.request_id.contains("names owner `changxing`"))
            },
        )
        .await;
        // A silent peer is left after `peer_idle_timeout_ms`; a response larger than a receiver
        // accepts is refused by its length, before it is read.
        for (alteration, expected) in [
            (STALL, "no message from the peer for 1000 ms"),
            (GIANT, "too large"),
        ] {
            mode.store(alteration, Ordering::SeqCst);
            eventually(
                WAIT,
                &format!("the stream left after alteration {alteration}"),
                || async {
                    let s = guangde.peer("zone");
                    s.last_error.filter(|e| e.contains(expected)).map(|_| ())
                },
            )
            .await;
            assert_eq!(guangde.peer("zone").cursor, DEFAULT_ENTRIES + 1);
        }
    }

    mode.store(PASS, Ordering::SeqCst);
    let third = create(&fed, "zone", "after tampering").await;
    let copy = replicated(&fed, "guangde", &third.name).await;
    assert_eq!(copy.display_name, "after tampering");
    replicated(&fed, "guangde", &second.name).await;
    eventually(WAIT, "every change applied", || async {
        (guangde.peer("zone").cursor == DEFAULT_ENTRIES + 3 + extra).then_some(())
    })
    .await;
    let evidence = stored_evidence(&fed, "guangde", "zone", &fed.pki.gateway_paths("guangde"));
    let applied = (DEFAULT_ENTRIES + 3 + extra) as usize;
    assert_eq!(
        evidence.len(),
        applied,
        "one piece of evidence per applied change"
    );
    let by_manifest = evidence.iter().filter(|e| **e).count();
    assert_eq!(
        by_manifest,
        if legacy { 0 } else { applied },
        "{evidence:?}"
    );

    // The operator's command agrees, and names a change whose kept record was altered.
    let no_env = HashMap::new();
    let verify = || {
        yrd_gateway::cli::audit::run(
            AuditCommand::VerifyEvidence {
                config: guangde.config.clone(),
            },
            &no_env,
        )
    };
    assert!(verify().await.unwrap(), "intact evidence verifies");
    let db = rusqlite::Connection::open(fed.root.path().join("guangde/store.db")).unwrap();
    let kept: Vec<u8> = db
        .query_row(
            "SELECT envelope FROM evidence WHERE owner = 'zone' AND seq = 2",
            [],
            |r| r.get(0),
        )
        .unwrap();
    let mut altered = pb::ChangeEnvelope::decode(kept.as_slice()).unwrap();
    altered.revision += 1;
    db.execute(
        "UPDATE evidence SET envelope = ?1 WHERE owner = 'zone' AND seq = 2",
        [altered.encode_to_vec()],
    )
    .unwrap();
    assert!(!verify().await.unwrap(), "altered evidence is caught");
    let store = SqliteStore::open(&fed.root.path().join("guangde/store.db")).unwrap();
    let verifier = SignatureVerifier::new(
        tls::TlsMaterial::load(&fed.pki.gateway_paths("guangde"))
            .unwrap()
            .fixed(),
        TRUST_DOMAIN,
    );
    match verify_evidence(&store, &verifier, "zone", "guangde").await {
        Err(EvidenceError::Bad { seq: 2, reason }) => assert!(
            reason.contains(if legacy {
                "does not verify"
            } else {
                "does not list"
            }),
            "{reason}"
        ),
        other => panic!("expected change 2 to be named, got {other:?}"),
    }
}

/// Checks every piece of evidence `party` stored of `owner`'s changes against the owner's
/// certificate, as a third party holding only the CA would: the signature over the envelope,
/// or over a manifest that lists the envelope's SHA-256 at the change's place. Returns, per
/// change in order, whether a manifest carried its signature.
fn stored_evidence(fed: &TestFederation, party: &str, owner: &str, tls: &TlsPaths) -> Vec<bool> {
    use sha2::{Digest, Sha256};

    let verifier =
        SignatureVerifier::new(tls::TlsMaterial::load(tls).unwrap().fixed(), TRUST_DOMAIN);
    let conn = rusqlite::Connection::open(fed.root.path().join(party).join("store.db")).unwrap();
    let mut rows = conn
        .prepare(
            "SELECT e.seq, e.envelope, e.scheme, e.signature, s.certificate, \
                    m.manifest, m.scheme, m.signature \
             FROM evidence e JOIN signers s ON s.fingerprint = e.signer \
             LEFT JOIN manifests m ON m.digest = e.manifest \
             WHERE e.owner = ?1 ORDER BY e.seq",
        )
        .unwrap();
    let rows = rows
        .query_map([owner], |r| {
            Ok((
                r.get::<_, i64>(0)? as u64,
                r.get::<_, Vec<u8>>(1)?,
                r.get::<_, u16>(2)?,
                r.get::<_, Vec<u8>>(3)?,
                r.get::<_, Vec<u8>>(4)?,
                r.get::<_, Option<Vec<u8>>>(5)?,
                r.get::<_, Option<u16>>(6)?,
                r.get::<_, Option<Vec<u8>>>(7)?,
            ))
        })
        .unwrap()
        .collect::<Result<Vec<_>, _>>()
        .unwrap();
    let mut by_manifest = Vec::new();
    for (seq, envelope, scheme, signature, certificate, manifest, m_scheme, m_signature) in rows {
        let signer = verifier.check_signer(&certificate, owner).unwrap();
        let decoded = pb::ChangeEnvelope::decode(envelope.as_slice()).unwrap();
        assert_eq!((decoded.owner.as_str(), decoded.seq), (owner, seq));
        match manifest {
            None => {
                verifier
                    .verify(&signer, seq, &envelope, scheme, &signature)
                    .unwrap();
                by_manifest.push(false);
            }
            Some(manifest) => {
                verifier
                    .verify(
                        &signer,
                        seq,
                        &manifest,
                        m_scheme.unwrap(),
                        &m_signature.unwrap(),
                    )
                    .unwrap();
                let listed = pb::ChangeManifest::decode(manifest.as_slice()).unwrap();
                assert_eq!(listed.recipient, party);
                let place = (seq - listed.first_seq) as usize;
                assert_eq!(
                    listed.envelope_sha256[place],
                    Sha256::digest(&envelope).to_vec(),
                    "change {seq} is not the one its manifest lists"
                );
                by_manifest.push(true);
            }
        }
    }
    by_manifest
}

/// guangde, as a process of its own, pulls the zone's changes through the relay while it sends
/// a 65 MiB response and then nothing at all: the first is refused by its length before it is
/// read, the silent stream is left after `peer_idle_timeout_ms`, guangde's memory (now and
/// peak) does not grow with what the peer sent, and the genuine changes arrive afterwards.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_giant_or_silent_peer_leaves_the_receivers_memory_bounded() {
    let relay_listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let relay_addr = relay_listener.local_addr().unwrap().to_string();
    let fed = TestFederation::start(&["zone"]).await;
    let mode = Arc::new(AtomicU8::new(PASS));
    serve_relay(&fed, relay_listener, mode.clone(), false);
    let admin = crate::replicas::free_addr();
    let options = Options {
        extra_toml: "[limits]\npeer_idle_timeout_ms = 1000\n".into(),
        listen_admin: Some(admin.to_string()),
        ..Options::default()
    };
    let config = write_config(
        fed.root.path(),
        "guangde",
        "127.0.0.1:0",
        &[("zone".to_string(), relay_addr)],
        &options,
    );
    let guangde = ChildGateway::spawn(&config);
    let at_guangde = || crate::replicas::projects_at(&fed.pki, guangde.addr, "guangde");
    let arrived = |name: String| async move {
        eventually(WAIT, &format!("{name} at guangde"), || async {
            at_guangde()
                .get_project(pb::GetProjectRequest { name: name.clone() })
                .await
                .ok()
        })
        .await
    };
    arrived(create(&fed, "zone", "before the giant").await.name).await;
    let before = guangde.memory();

    let mut figures = Vec::new();
    for (alteration, what, expected) in [
        (GIANT, "a 65 MiB response", "too large"),
        (
            STALL,
            "a silent stream",
            "no message from the peer for 1000 ms",
        ),
    ] {
        mode.store(alteration, Ordering::SeqCst);
        create(&fed, "zone", &format!("written during {what}")).await;
        eventually(WAIT, &format!("guangde leaving {what}"), || async {
            let (_, page) = http_get(admin, "/").await;
            page.contains(expected).then_some(())
        })
        .await;
        let during = guangde.memory();
        figures.push(format!("{during} after {what}"));
        assert!(
            during.peak_kib < before.peak_kib + 32 * 1024,
            "guangde's peak grew from {before} to {during} with {what}"
        );
    }
    mode.store(PASS, Ordering::SeqCst);
    let last = create(&fed, "zone", "after the giant and the silence").await;
    arrived(last.name).await;
    let after = guangde.memory();
    println!(
        "hostile peer: guangde's memory {before} before, {}, {after} once the genuine changes \
         arrived",
        figures.join(", ")
    );
}
