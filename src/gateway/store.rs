//! Opening a gateway's store: the backend its config names, behind the seal of data at rest
//! ([`crate::vault`]), with what an older store holds in clear sealed first.

use std::sync::Arc;

use super::GatewayError;
use crate::config::Config;
use crate::store::Store;

/// Opens the store `config` names behind its seal ([`crate::vault`]): with `[keys]`, the key
/// ring is opened (a wrong or missing key-encryption key stops the start) and, with
/// `migrate`, whatever the store still holds in clear is sealed before anything is served.
pub async fn open_sealed(config: &Config, migrate: bool) -> Result<Arc<dyn Store>, GatewayError> {
    Ok(open_vault_and_store(config, migrate).await?.0)
}

/// [`open_sealed`], with the vault (`None` without `[keys]`).
pub(super) async fn open_vault_and_store(
    config: &Config,
    migrate: bool,
) -> Result<(Arc<dyn Store>, Option<Arc<crate::vault::Vault>>), GatewayError> {
    let vault = match &config.keys {
        Some(keys) => Some(crate::vault::Vault::open(keys, config.tls.profile)?),
        None => {
            tracing::warn!(
                "no [keys] in the config: records are stored in clear (see the operator guide, \"Data at rest\")"
            );
            None
        }
    };
    let inner = crate::store::open(&config.store, config.tls.profile.digest()).await?;
    let sealed = crate::vault::SealedStore::new(inner, vault.clone(), &config.party);
    let owners: Vec<String> = config
        .federation
        .parties()
        .iter()
        .map(|p| p.id.clone())
        .collect();
    if migrate {
        crate::vault::migrate(&sealed, &owners).await?;
    }
    Ok((Arc::new(sealed), vault))
}
