//! `DirectoryService`: who the caller is, and the federation's parties with the membership
//! digests this gateway and its peers show.

use std::sync::Arc;

use tonic::{Request, Response, Status};

use super::caller;
use crate::identity::Role;
use crate::identity::tls::PeerInfo;
use crate::membership::Membership;
use crate::records::Records;
use crate::wire::pb;

#[derive(Clone)]
pub struct DirectoryApi {
    records: Records,
    membership: Arc<Membership>,
}

impl DirectoryApi {
    pub fn new(records: Records, membership: Arc<Membership>) -> Self {
        DirectoryApi {
            records,
            membership,
        }
    }
}

#[tonic::async_trait]
impl pb::directory_service_server::DirectoryService for DirectoryApi {
    async fn who_am_i(
        &self,
        request: Request<pb::WhoAmIRequest>,
    ) -> Result<Response<pb::WhoAmIResponse>, Status> {
        let caller = caller(&request)?;
        let negotiated = request
            .extensions()
            .get::<PeerInfo>()
            .map(|p| p.negotiated.clone())
            .unwrap_or_default();
        let (role, system) = match &caller.id.role {
            Role::Gateway => (pb::Role::Gateway, String::new()),
            Role::Client { system } => (pb::Role::Client, system.clone()),
        };
        Ok(Response::new(pb::WhoAmIResponse {
            spiffe_id: caller.id.to_string(),
            party: caller.id.party.clone(),
            role: role as i32,
            system,
            read_only: caller.read_only,
            gateway_party: self.records.party().to_string(),
            crypto_profile: self.membership.profile().to_string(),
            tls_cipher_suite: negotiated.cipher_suite,
            tls_group: negotiated.group,
        }))
    }

    async fn list_parties(
        &self,
        _request: Request<pb::ListPartiesRequest>,
    ) -> Result<Response<pb::ListPartiesResponse>, Status> {
        let parties = self
            .records
            .federation()
            .parties()
            .iter()
            .enumerate()
            .map(|(order, p)| pb::Party {
                id: p.id.clone(),
                display_name: p.display_name.clone(),
                province: p.province.clone(),
                division_code: p.division_code.clone(),
                order: order as i32,
                suspended: p.suspended,
            })
            .collect();
        let peers = self
            .membership
            .views()
            .into_iter()
            .map(|v| pb::PeerMembership {
                party: v.party,
                membership_sha256: v.digest.to_vec(),
                differs: v.differs,
                seen_time: Some(crate::wire::timestamp(v.seen_at)),
            })
            .collect();
        Ok(Response::new(pb::ListPartiesResponse {
            parties,
            membership_sha256: self.membership.own().to_vec(),
            peers,
            crypto_profile: self.membership.profile().to_string(),
        }))
    }
}
