//! Who is calling: SPIFFE ids carried in certificates, and what each identity may call.
//!
//! The TLS handshake (see [`tls`]) proves the certificate chains to the federation CA; this
//! module turns the certificate's URI SAN into a [`SpiffeId`] and decides, in
//! [`authorize`], whether that identity may call a method at this gateway. The gRPC layer in
//! `api::authz` applies the decision to every call, so handlers never repeat it.

pub mod pem;
pub mod pkcs11;
pub mod pki;
pub mod signer;
pub mod tls;

use std::collections::BTreeSet;
use std::fmt;

use crate::domain::{Members, check_party_id};

/// What a certificate's SPIFFE id makes its holder.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Role {
    /// A party's gateway: `spiffe://<td>/party/<party>/gateway`.
    Gateway,
    /// A party system: `spiffe://<td>/party/<party>/client/<system>`.
    Client { system: String },
}

/// A parsed SPIFFE id of the federation's form.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SpiffeId {
    pub trust_domain: String,
    pub party: String,
    pub role: Role,
}

impl SpiffeId {
    pub fn gateway(trust_domain: &str, party: &str) -> Self {
        SpiffeId {
            trust_domain: trust_domain.into(),
            party: party.into(),
            role: Role::Gateway,
        }
    }

    pub fn client(trust_domain: &str, party: &str, system: &str) -> Self {
        SpiffeId {
            trust_domain: trust_domain.into(),
            party: party.into(),
            role: Role::Client {
                system: system.into(),
            },
        }
    }

    /// Parses `spiffe://<td>/party/<party>/gateway` or `.../party/<party>/client/<system>`.
    pub fn parse(uri: &str) -> Result<Self, String> {
        let rest = uri
            .strip_prefix("spiffe://")
            .ok_or_else(|| format!("`{uri}` is not a spiffe:// URI"))?;
        let mut segments = rest.split('/');
        let trust_domain = segments.next().unwrap_or_default();
        if trust_domain.is_empty() {
            return Err(format!("`{uri}` has no trust domain"));
        }
        let segs: Vec<&str> = segments.collect();
        let role = match segs.as_slice() {
            ["party", party, "gateway"] => (party.to_string(), Role::Gateway),
            ["party", party, "client", system] => {
                check_system_name(system).map_err(|m| format!("`{uri}`: {m}"))?;
                (
                    party.to_string(),
                    Role::Client {
                        system: system.to_string(),
                    },
                )
            }
            _ => {
                return Err(format!(
                    "`{uri}` is neither /party/<party>/gateway nor /party/<party>/client/<system>"
                ));
            }
        };
        check_party_id(&role.0).map_err(|m| format!("`{uri}`: {m}"))?;
        Ok(SpiffeId {
            trust_domain: trust_domain.to_string(),
            party: role.0,
            role: role.1,
        })
    }

    pub fn is_gateway(&self) -> bool {
        matches!(self.role, Role::Gateway)
    }

    /// The client system name, or `None` for a gateway.
    pub fn system(&self) -> Option<&str> {
        match &self.role {
            Role::Client { system } => Some(system),
            Role::Gateway => None,
        }
    }
}

impl fmt::Display for SpiffeId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.role {
            Role::Gateway => write!(
                f,
                "spiffe://{}/party/{}/gateway",
                self.trust_domain, self.party
            ),
            Role::Client { system } => write!(
                f,
                "spiffe://{}/party/{}/client/{}",
                self.trust_domain, self.party, system
            ),
        }
    }
}

/// System names: 1-63 characters of a-z, 0-9, '-' and '_'.
pub fn check_system_name(s: &str) -> Result<(), String> {
    if !s.is_empty()
        && s.len() <= 63
        && s.bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'_')
    {
        Ok(())
    } else {
        Err(format!(
            "`{s}` is not a system name (1-63 of a-z, 0-9, '-', '_')"
        ))
    }
}

/// The identity a connection presented, as the gateway concluded it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Caller {
    pub id: SpiffeId,
    /// True when configuration limits this client system to reads.
    pub read_only: bool,
}

/// How a gRPC method may be reached.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Access {
    /// A party-facing method that only reads (Get*, List*, Watch*, WhoAmI).
    ClientRead,
    /// A party-facing method that writes; every party-facing method not named as a read.
    ClientWrite,
    /// The gateway-to-gateway service.
    Federation,
    /// Infrastructure any authenticated member may call (health, reflection).
    Infrastructure,
}

/// gRPC service names of the party-facing API.
const CLIENT_SERVICES: &[&str] = &[
    "yrd.exchange.v1.ProjectService",
    "yrd.exchange.v1.FactorService",
    "yrd.exchange.v1.WatchService",
    "yrd.exchange.v1.AuditService",
    "yrd.exchange.v1.DirectoryService",
    "yrd.exchange.v1.CatalogService",
    "yrd.exchange.v1.AccessService",
];
const FEDERATION_SERVICE: &str = "yrd.exchange.v1.FederationService";

/// Classifies a gRPC path (`/package.Service/Method`). Party-facing methods are reads when their
/// name starts with Get, List or Watch, or is WhoAmI; anything else there counts as a write, so a
/// new method is refused to read-only clients until it is deliberately named a read.
pub fn classify(path: &str) -> Access {
    let mut parts = path.trim_start_matches('/').splitn(2, '/');
    let service = parts.next().unwrap_or_default();
    let method = parts.next().unwrap_or_default();
    if service == FEDERATION_SERVICE {
        Access::Federation
    } else if CLIENT_SERVICES.contains(&service) {
        let read = method == "WhoAmI"
            || ["Get", "List", "Watch"]
                .iter()
                .any(|p| method.starts_with(p));
        if read {
            Access::ClientRead
        } else {
            Access::ClientWrite
        }
    } else {
        Access::Infrastructure
    }
}

/// Why a call was refused before reaching a handler.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AuthzError {
    /// The certificate chained to the CA but carries no usable SPIFFE id.
    #[error("client certificate has no valid federation identity: {0}")]
    NoIdentity(String),
    #[error("{caller} is not allowed to call {method}: {reason}")]
    Denied {
        caller: String,
        method: String,
        reason: &'static str,
    },
}

/// The access rules of one gateway (SPEC §2), from its configuration; membership is read at
/// every call, so a party removed or suspended while the gateway runs is refused at once.
#[derive(Debug, Clone)]
pub struct AccessPolicy {
    pub party: String,
    pub trust_domain: String,
    pub members: Members,
    pub read_only_systems: BTreeSet<String>,
    /// The federation's crypto profile: in gm a gateway identity is taken over RFC 8998 only.
    pub profile: crate::crypto::Profile,
}

impl AccessPolicy {
    /// Turns the identity found on a connection into a caller, refusing foreign identities.
    pub fn caller(&self, id: &SpiffeId) -> Result<Caller, AuthzError> {
        if id.trust_domain != self.trust_domain {
            return Err(AuthzError::NoIdentity(format!(
                "trust domain `{}` is not `{}`",
                id.trust_domain, self.trust_domain
            )));
        }
        let federation = self.members.current();
        match federation.get(&id.party) {
            None => {
                return Err(AuthzError::NoIdentity(format!(
                    "party `{}` is not a member of the federation",
                    id.party
                )));
            }
            Some(p) if p.suspended => {
                return Err(AuthzError::NoIdentity(format!(
                    "party `{}` is suspended from the federation",
                    id.party
                )));
            }
            Some(_) => {}
        }
        let read_only = id.party == self.party
            && id
                .system()
                .is_some_and(|s| self.read_only_systems.contains(s));
        Ok(Caller {
            id: id.clone(),
            read_only,
        })
    }

    /// Refuses a peer gateway's identity on a connection its federation's profile does not
    /// allow it: in gm, one that negotiated international suites (the client port may offer
    /// them to party systems, `[tls.intl_clients]`; links between gateways stay RFC 8998).
    pub fn check_channel(
        &self,
        caller: &Caller,
        path: &str,
        negotiated: &tls::Negotiated,
    ) -> Result<(), AuthzError> {
        if caller.id.role == Role::Gateway
            && !tls::intl_clients::is_federation_grade(self.profile, negotiated)
        {
            return Err(AuthzError::Denied {
                caller: caller.id.to_string(),
                method: path.to_string(),
                reason: "a gateway of the gm profile must connect over RFC 8998 (TLS_SM4_GCM_SM3)",
            });
        }
        Ok(())
    }

    /// Decides whether `caller` may call the gRPC method at `path`.
    pub fn authorize(&self, caller: &Caller, path: &str) -> Result<Access, AuthzError> {
        let access = classify(path);
        let deny = |reason| AuthzError::Denied {
            caller: caller.id.to_string(),
            method: path.to_string(),
            reason,
        };
        match (access, &caller.id.role) {
            (Access::Infrastructure, _) => Ok(access),
            (Access::Federation, Role::Gateway) => {
                if caller.id.party == self.party {
                    Err(deny("a gateway does not replicate from its own party"))
                } else {
                    Ok(access)
                }
            }
            (Access::Federation, Role::Client { .. }) => {
                Err(deny("the federation service is for peer gateways only"))
            }
            (Access::ClientRead | Access::ClientWrite, Role::Gateway) => {
                Err(deny("a gateway identity cannot call party-facing services"))
            }
            (Access::ClientRead | Access::ClientWrite, Role::Client { .. }) => {
                if caller.id.party != self.party {
                    Err(deny("party systems call only their own party's gateway"))
                } else if access == Access::ClientWrite && caller.read_only {
                    Err(deny("this client system is configured read-only"))
                } else {
                    Ok(access)
                }
            }
        }
    }
}

#[cfg(test)]
mod tests;
