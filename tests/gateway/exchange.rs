//! SPEC §4: replication between real gateways over real mutual TLS.

use std::collections::{BTreeSet, HashMap};
use std::sync::Arc;
use std::sync::atomic::{AtomicU8, Ordering};
use std::time::Duration;

use prost::Message;
use tokio_stream::StreamExt;
use tonic::{Code, Request, Response, Status};
use yrd_gateway::cli::audit::AuditCommand;
use yrd_gateway::exchange::evidence::{EvidenceError, verify_evidence};
use yrd_gateway::exchange::signing::SignatureVerifier;
use yrd_gateway::identity::signer::ChangeSigner;
use yrd_gateway::identity::tls;
use yrd_gateway::identity::tls::TlsPaths;
use yrd_gateway::store::sqlite::SqliteStore;
use yrd_gateway::store::{RecordStore, ReplicaStore};
use yrd_gateway::wire::pb;
use yrd_gateway::wire::pb::federation_service_client::FederationServiceClient;
use yrd_gateway::wire::pb::federation_service_server::{
    FederationService, FederationServiceServer,
};

use crate::common::*;

const WAIT: Duration = Duration::from_secs(30);

async fn replicated(fed: &TestFederation, gateway: &str, name: &str) -> pb::Project {
    eventually(WAIT, &format!("{name} at {gateway}"), || {
        try_get(fed, gateway, name)
    })
    .await
}

fn allocation() -> pb::Allocation {
    pb::Allocation {
        kind: pb::FactorKind::EnergyQuota as i32,
        quantity: "1500.5".into(),
        from_party: "changxing".into(),
        to_party: "zone".into(),
        benefit_shares: vec![pb::BenefitShare {
            party: "zone".into(),
            basis_points: 10_000,
        }],
        valid_until: Some(prost_types::Timestamp::from(
            std::time::SystemTime::now() + Duration::from_secs(86_400),
        )),
        ..Default::default()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_zone_project_reaches_every_party_within_its_catalog() {
    // The zone publishes its own catalog: projects to everyone with contact phones open to
    // the Zhejiang members only; allocations CONDITIONAL, so without a grant no one gets them.
    let options = Options {
        without_default_catalog: vec!["zone".to_string()],
        ..Options::default()
    };
    let fed = TestFederation::start_with(&PARTIES, options).await;
    let mut phone = data_item("contact.phone", pb::SharingClass::Conditional, "");
    phone.open_to = vec!["changxing".into(), "anji".into()];
    let entries = [
        (
            pb::RecordKind::Project,
            pb::SharingClass::Unconditional,
            vec![phone],
        ),
        (
            pb::RecordKind::Allocation,
            pb::SharingClass::Conditional,
            vec![data_item("description", pb::SharingClass::Unspecified, "")],
        ),
    ];
    for (kind, class, items) in entries {
        fed.catalog("zone", "zone")
            .publish_catalog_entry(pb::PublishCatalogEntryRequest {
                entry: Some(pb::CatalogEntry {
                    resource_code: format!("ZONE-{}", kind.as_str_name()),
                    display_name: "zone records".into(),
                    record_kind: kind as i32,
                    items,
                    sharing_class: class as i32,
                    ..Default::default()
                }),
                request_id: uuid::Uuid::now_v7().to_string(),
            })
            .await
            .unwrap();
    }
    let project = create(&fed, "zone", "shared with everyone").await;
    let proposed = fed
        .factors("zone", "zone")
        .propose_allocation(pb::ProposeAllocationRequest {
            allocation: Some(allocation()),
            request_id: uuid::Uuid::now_v7().to_string(),
        })
        .await
        .unwrap()
        .into_inner()
        .allocation
        .unwrap();

    for party in ["changxing", "anji", "guangde"] {
        let copy = replicated(&fed, party, &project.name).await;
        assert_eq!(copy.owner, "zone", "replicas are marked with their owner");
        assert_eq!(copy.etag, project.etag, "same version everywhere");
        assert_eq!(copy.display_name, project.display_name);
        let phone = copy.contact.as_ref().unwrap().phone.clone();
        if party == "guangde" {
            assert_eq!(
                phone, "",
                "contact phones do not cross the provincial border"
            );
            assert_eq!(copy.contact.as_ref().unwrap().name, "张三");
        } else {
            assert_eq!(phone, "+86 138-0000-0000");
        }
        // Replicas are listed too.
        let listed = fed
            .projects(party, party)
            .list_projects(pb::ListProjectsRequest {
                owner: "zone".into(),
                ..Default::default()
            })
            .await
            .unwrap()
            .into_inner();
        assert_eq!(listed.projects.len(), 1);
    }
    // Every party has applied the zone's four changes (two entries, the project, the
    // allocation), but the allocation was sent to no one.
    for party in ["changxing", "anji", "guangde"] {
        eventually(WAIT, "cursor at the zone's head", || async {
            (fed.gateways[party].peer("zone").cursor == 4).then_some(())
        })
        .await;
        let err = fed
            .factors(party, party)
            .get_allocation(pb::GetAllocationRequest {
                name: proposed.name.clone(),
            })
            .await
            .unwrap_err();
        assert_eq!(err.code(), Code::NotFound, "{party}");
        let all = fed
            .factors(party, party)
            .list_allocations(pb::ListAllocationsRequest::default())
            .await
            .unwrap()
            .into_inner();
        assert!(all.allocations.is_empty(), "{party}");
    }
}

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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_receiver_killed_mid_stream_loses_nothing_and_applies_nothing_twice() {
    const TOTAL: usize = 3000;
    let fed = TestFederation::start(&["zone"]).await;
    let root = fed.root.path();
    let config = write_config(
        root,
        "guangde",
        "127.0.0.1:0",
        &[("zone".to_string(), fed.addr("zone").to_string())],
        &Options::default(),
    );
    let receiver = ChildGateway::spawn(&config);
    let guangde_count = |addr: std::net::SocketAddr| {
        let pki = &fed.pki;
        async move {
            let channel = tls::channel(
                &addr.to_string(),
                "localhost",
                pki.client_config("guangde", "client"),
            )
            .unwrap();
            let mut client = pb::project_service_client::ProjectServiceClient::new(channel);
            all_projects(&mut client).await
        }
    };

    // Four writers create TOTAL projects at the zone while guangde follows.
    let mut writers = Vec::new();
    for w in 0..4 {
        let mut client = fed.projects("zone", "zone");
        writers.push(tokio::spawn(async move {
            for i in 0..TOTAL / 4 {
                let request = create_request(sample_project(&format!("writer {w} #{i}")));
                client.create_project(request).await.unwrap();
            }
        }));
    }
    let addr = receiver.addr;
    let seen_at_kill = eventually(WAIT, "guangde in the middle of the stream", || async {
        let n = guangde_count(addr).await.len();
        (n >= 500).then_some(n)
    })
    .await;
    receiver.kill_9();
    for w in writers {
        w.await.unwrap();
    }
    assert!(
        seen_at_kill < TOTAL,
        "the kill should land mid-stream ({seen_at_kill})"
    );

    let restarted = ChildGateway::spawn(&config);
    let addr = restarted.addr;
    let copies = eventually(Duration::from_secs(60), "guangde caught up", || async {
        let all = guangde_count(addr).await;
        (all.len() >= TOTAL).then_some(all)
    })
    .await;
    restarted.kill_9();

    let names: BTreeSet<String> = copies.iter().map(|p| p.name.clone()).collect();
    assert_eq!(copies.len(), TOTAL, "no duplicates");
    let originals: BTreeSet<String> = all_projects(&mut fed.projects("zone", "zone"))
        .await
        .into_iter()
        .map(|p| p.name)
        .collect();
    assert_eq!(names, originals, "no loss");

    // The receiver's own bookkeeping: cursor at the head, each change once in its feed.
    let store =
        yrd_gateway::store::sqlite::SqliteStore::open(&root.join("guangde/store.db")).unwrap();
    let head = TOTAL as u64 + DEFAULT_ENTRIES;
    assert_eq!(store.cursor("zone").await.unwrap(), head);
    let feed = store.feed(0, TOTAL * 2).await.unwrap();
    let seqs: Vec<u64> = feed
        .iter()
        .filter(|e| e.change.owner == "zone")
        .map(|e| e.change.seq)
        .collect();
    assert_eq!(seqs, (1..=head).collect::<Vec<_>>());
    println!(
        "killed guangde with {seen_at_kill} of {TOTAL} applied; it resumed and applied the rest once"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn after_a_network_cut_both_sides_converge_without_help() {
    let to_zone = TcpProxy::start().await;
    let to_guangde = TcpProxy::start().await;
    let options = Options {
        routes: HashMap::from([
            (
                ("guangde".to_string(), "zone".to_string()),
                to_zone.addr.to_string(),
            ),
            (
                ("zone".to_string(), "guangde".to_string()),
                to_guangde.addr.to_string(),
            ),
        ]),
        ..Options::default()
    };
    let fed = TestFederation::start_with(&["zone", "guangde"], options).await;
    to_zone.set_upstream(fed.addr("zone"));
    to_guangde.set_upstream(fed.addr("guangde"));

    let before = create(&fed, "zone", "before the cut").await;
    replicated(&fed, "guangde", &before.name).await;

    to_zone.cut();
    to_guangde.cut();
    let mut zone_side = Vec::new();
    let mut guangde_side = Vec::new();
    for i in 0..5 {
        zone_side.push(
            create(&fed, "zone", &format!("zone during cut {i}"))
                .await
                .name,
        );
        guangde_side.push(
            create(&fed, "guangde", &format!("guangde during cut {i}"))
                .await
                .name,
        );
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert!(
        try_get(&fed, "guangde", &zone_side[0]).await.is_none(),
        "the cut did not cut"
    );
    assert!(
        try_get(&fed, "zone", &guangde_side[0]).await.is_none(),
        "the cut did not cut"
    );

    to_zone.heal();
    to_guangde.heal();
    for name in &zone_side {
        replicated(&fed, "guangde", name).await;
    }
    for name in &guangde_side {
        replicated(&fed, "zone", name).await;
    }
    assert_eq!(
        fed.gateways["guangde"].peer("zone").cursor,
        DEFAULT_ENTRIES + 6
    );
    assert_eq!(
        fed.gateways["zone"].peer("guangde").cursor,
        DEFAULT_ENTRIES + 5
    );
}

async fn next_events(
    stream: &mut tonic::Streaming<pb::WatchResponse>,
    n: usize,
) -> Vec<pb::WatchResponse> {
    let mut out = Vec::new();
    while out.len() < n {
        let event = tokio::time::timeout(WAIT, stream.message())
            .await
            .expect("watch event in time")
            .unwrap()
            .expect("stream open");
        // The default catalogs published at start are not what these tests follow.
        if matches!(
            event.record,
            Some(pb::watch_response::Record::CatalogEntry(_))
        ) {
            continue;
        }
        out.push(event);
    }
    out
}

fn event_name(e: &pb::WatchResponse) -> String {
    match e.record.as_ref().unwrap() {
        pb::watch_response::Record::Project(p) => p.name.clone(),
        pb::watch_response::Record::Allocation(a) => a.name.clone(),
        pb::watch_response::Record::Decision(d) => d.name.clone(),
        pb::watch_response::Record::Referral(r) => r.name.clone(),
        pb::watch_response::Record::CatalogEntry(e) => e.name.clone(),
        pb::watch_response::Record::AccessRequest(r) => r.name.clone(),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn watch_resumes_from_a_token_and_misses_nothing() {
    let fed = TestFederation::start(&["zone", "changxing"]).await;
    let mut expected = vec![
        create(&fed, "zone", "z1").await.name,
        create(&fed, "zone", "z2").await.name,
    ];
    let c1 = create(&fed, "changxing", "c1").await.name;
    replicated(&fed, "zone", &c1).await;
    expected.push(c1);

    let mut watch = fed.watch("zone", "zone");
    let mut stream = watch
        .watch(pb::WatchRequest::default())
        .await
        .unwrap()
        .into_inner();
    let first = next_events(&mut stream, 2).await;
    let token = first[1].resume_token.clone();
    drop(stream);

    // Changes while the client is away: one own, one replicated.
    expected.push(create(&fed, "zone", "z3").await.name);
    let c2 = create(&fed, "changxing", "c2").await.name;
    replicated(&fed, "zone", &c2).await;
    expected.push(c2);

    let mut resumed = watch
        .watch(pb::WatchRequest {
            resume_token: token,
        })
        .await
        .unwrap()
        .into_inner();
    let rest = next_events(&mut resumed, 3).await;
    let seen: Vec<String> = first.iter().chain(&rest).map(event_name).collect();
    assert_eq!(
        seen.iter().collect::<BTreeSet<_>>(),
        expected.iter().collect::<BTreeSet<_>>(),
        "every change exactly once across the reconnect"
    );
    assert_eq!(seen.len(), expected.len());
    assert!(
        rest.iter().any(|e| e.owner == "changxing"),
        "replicas are in the stream"
    );
    // Nothing more is pending.
    assert!(
        tokio::time::timeout(Duration::from_millis(300), resumed.message())
            .await
            .is_err()
    );

    // A live change arrives on the open stream.
    let z4 = create(&fed, "zone", "z4").await.name;
    assert_eq!(event_name(&next_events(&mut resumed, 1).await[0]), z4);

    let err = watch
        .watch(pb::WatchRequest {
            resume_token: "not-a-token".into(),
        })
        .await
        .unwrap_err();
    assert_eq!(bad_fields(&err), vec!["resume_token".to_string()]);
}

#[tokio::test]
async fn a_client_identity_cannot_pull_and_a_peer_cannot_pull_another_owner() {
    let fed = TestFederation::start(&["zone"]).await;
    let err = FederationServiceClient::new(fed.client("zone", "zone"))
        .pull_changes(pb::PullChangesRequest {
            owner: "zone".into(),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::PermissionDenied);
    let peer = fed.channel_with("zone", fed.pki.client_config("anji", "gateway"));
    let err = FederationServiceClient::new(peer)
        .pull_changes(pb::PullChangesRequest {
            owner: "changxing".into(),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(bad_fields(&err), vec!["owner".to_string()]);
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
