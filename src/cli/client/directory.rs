//! `yrd-gateway client whoami | parties`: what the gateway concluded about this client, and
//! the federation's parties.

use tonic::transport::Channel;

use super::explain;
use crate::wire::pb;
use crate::wire::pb::directory_service_client::DirectoryServiceClient;

pub(super) async fn whoami(channel: Channel) -> anyhow::Result<()> {
    let me = DirectoryServiceClient::new(channel)
        .who_am_i(pb::WhoAmIRequest {})
        .await
        .map_err(explain)?
        .into_inner();
    say!("spiffe id:  {}", me.spiffe_id);
    say!("party:      {}", me.party);
    say!(
        "role:       {}",
        pb::Role::try_from(me.role)
            .map(|r| r.as_str_name())
            .unwrap_or("?")
    );
    say!("system:     {}", me.system);
    say!("read only:  {}", me.read_only);
    say!("gateway of: {}", me.gateway_party);
    // A gateway older than crypto profiles leaves these empty.
    if !me.crypto_profile.is_empty() {
        say!("profile:    {}", me.crypto_profile);
        say!("channel:    {} over {}", me.tls_cipher_suite, me.tls_group);
    }
    Ok(())
}

pub(super) async fn parties(channel: Channel) -> anyhow::Result<()> {
    let parties = DirectoryServiceClient::new(channel)
        .list_parties(pb::ListPartiesRequest {})
        .await
        .map_err(explain)?
        .into_inner()
        .parties;
    for p in parties {
        say!(
            "{:<10} {:<8} {:<7} {}",
            p.id,
            p.province,
            p.division_code,
            p.display_name
        );
    }
    Ok(())
}
