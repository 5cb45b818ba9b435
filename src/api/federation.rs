//! `FederationService`: peers pull this party's change log. Authorization (gateway identities
//! of other members only) happened in the authz layer.

use std::pin::Pin;

use tokio_stream::{Stream, StreamExt};
use tonic::{Request, Response, Status};

use super::error::{bad_request, exchange_status};
use super::handlers::caller;
use super::pb;
use crate::exchange::outbound::Outbound;
use crate::records::Violations;

pub struct FederationApi {
    outbound: Outbound,
    party: String,
}

impl FederationApi {
    pub fn new(outbound: Outbound, party: String) -> Self {
        FederationApi { outbound, party }
    }
}

type ChangeStream = Pin<Box<dyn Stream<Item = Result<pb::PullChangesResponse, Status>> + Send>>;

#[tonic::async_trait]
impl pb::federation_service_server::FederationService for FederationApi {
    type PullChangesStream = ChangeStream;

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
            .stream(peer, req.after_seq)
            .map(|item| item.map_err(exchange_status));
        Ok(Response::new(Box::pin(stream)))
    }
}
