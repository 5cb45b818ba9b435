//! `FederationService`: peers pull this party's change log. Authorization (gateway identities
//! of other members only) happened in the authz layer.

use std::pin::Pin;

use tokio_stream::{Stream, StreamExt};
use tonic::{Request, Response, Status};

use std::sync::Arc;

use super::caller;
use super::error::{bad_request, exchange_status, store_status};
use crate::audit::witness;
use crate::exchange::outbound::Outbound;
use crate::exchange::recovery::give_back;
use crate::exchange::signing::SignatureVerifier;
use crate::records::{Feed, Violations};
use crate::store::AuditStore;
use crate::wire::pb;

pub struct FederationApi {
    outbound: Outbound,
    /// The kept evidence of peers' changes, to give a peer its own changes back.
    feed: Feed,
    party: String,
    store: Arc<dyn AuditStore>,
    verifier: Arc<SignatureVerifier>,
}

impl FederationApi {
    pub fn new(
        outbound: Outbound,
        feed: Feed,
        party: String,
        store: Arc<dyn AuditStore>,
        verifier: Arc<SignatureVerifier>,
    ) -> Self {
        FederationApi {
            outbound,
            feed,
            party,
            store,
            verifier,
        }
    }
}

type ChangeStream = Pin<Box<dyn Stream<Item = Result<pb::PullChangesResponse, Status>> + Send>>;
type ReturnStream = Pin<Box<dyn Stream<Item = Result<pb::ReturnChangesResponse, Status>> + Send>>;

#[tonic::async_trait]
impl pb::federation_service_server::FederationService for FederationApi {
    type PullChangesStream = ChangeStream;
    type ReturnChangesStream = ReturnStream;

    async fn pull_changes(
        &self,
        request: Request<pb::PullChangesRequest>,
    ) -> Result<Response<ChangeStream>, Status> {
        let peer = caller(&request)?.id.party;
        let req = request.into_inner();
        if req.owner != self.party {
            let mut v = Violations::new();
            v.add(
                "owner",
                format!(
                    "this gateway serves the change log of `{}` only",
                    self.party
                ),
            );
            return Err(bad_request(&v));
        }
        let stream = self
            .outbound
            .stream(
                peer,
                req.after_seq,
                req.accept_manifests,
                &req.membership_sha256,
            )
            .map(|item| item.map_err(exchange_status));
        Ok(Response::new(Box::pin(stream)))
    }

    async fn return_changes(
        &self,
        request: Request<pb::ReturnChangesRequest>,
    ) -> Result<Response<ReturnStream>, Status> {
        // A peer gets back only its own changes: the caller is the owner asked about.
        let peer = caller(&request)?.id.party;
        let after = request.into_inner().after_seq;
        let stream =
            give_back(self.feed.clone(), peer, after).map(|item| item.map_err(exchange_status));
        Ok(Response::new(Box::pin(stream)))
    }

    async fn witness_head(
        &self,
        request: Request<pb::WitnessHeadRequest>,
    ) -> Result<Response<pb::WitnessHeadResponse>, Status> {
        let peer = caller(&request)?.id.party;
        let Some(signed) = request.into_inner().head else {
            let mut v = Violations::new();
            v.add("head", "is required");
            return Err(bad_request(&v));
        };
        let head = witness::verify_head(&self.verifier, &peer, &signed).map_err(|e| {
            tracing::warn!(peer = %peer, error = %e, "refused a chain head");
            let mut v = Violations::new();
            v.add("head", e.to_string());
            bad_request(&v)
        })?;
        self.store
            .put_witnessed_head(head)
            .await
            .map_err(store_status)?;
        Ok(Response::new(pb::WitnessHeadResponse {}))
    }

    async fn list_witnessed_heads(
        &self,
        request: Request<pb::ListWitnessedHeadsRequest>,
    ) -> Result<Response<pb::ListWitnessedHeadsResponse>, Status> {
        let party = request.into_inner().party;
        let heads = self
            .store
            .witnessed_heads(&party)
            .await
            .map_err(store_status)?;
        Ok(Response::new(pb::ListWitnessedHeadsResponse {
            heads: heads
                .into_iter()
                .map(|h| pb::SignedChainHead {
                    head: h.signed,
                    scheme: u32::from(h.scheme),
                    signature: h.signature,
                    signer_certificate: h.signer,
                })
                .collect(),
        }))
    }
}
