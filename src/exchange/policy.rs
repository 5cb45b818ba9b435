//! The owner's sharing policy: for each peer, whether a record goes and which fields are
//! emptied before it leaves — from the owner's catalog and grants ([`crate::sharing`]) for
//! the governed kinds; catalog entries, access requests and answers by their own rules.

use serde_json::Value;

use crate::domain::RecordKind;
use crate::sharing::{PeerView, empty_path};
use crate::store::StoredRecord;

#[derive(Debug, Clone, Default)]
pub struct SharingPolicy {
    /// The coordinating party, which receives every access request and answer.
    coordinator: Option<String>,
}

/// A record as it may leave for one peer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Outgoing {
    pub body: String,
    /// Paths emptied, e.g. "project.contact.phone".
    pub withheld: Vec<String>,
}

impl SharingPolicy {
    /// Sends every access request and answer to `coordinator` too.
    pub fn with_coordinator(coordinator: &str) -> Self {
        SharingPolicy {
            coordinator: Some(coordinator.to_string()),
        }
    }

    /// What `peer` may see of `record` under `view` (the owner's catalog and grants as they
    /// apply to that peer now): `None` when nothing.
    /// Catalog entries go to every member whole: what a party shares, and how, is public
    /// within the federation. Access requests and answers go to the other party of the
    /// request and to the coordinating party. Other records as the catalog and grants say.
    pub fn outgoing(&self, view: &PeerView, peer: &str, record: &StoredRecord) -> Option<Outgoing> {
        match record.kind {
            RecordKind::CatalogEntry => return Some(whole(record)),
            // A request goes to the provider (its parent is the provider's catalog entry), an
            // answer to the requester (its parent is the request), both to the coordinator.
            RecordKind::AccessRequest | RecordKind::AccessAnswer => {
                let counterpart = record.index.parent.as_deref().and_then(owner_of);
                let to = counterpart == Some(peer) || self.coordinator.as_deref() == Some(peer);
                return to.then(|| whole(record));
            }
            _ => {}
        }
        let paths = view.visibility(record.kind)?;
        if paths.is_empty() {
            return Some(whole(record));
        }
        let prefix = format!("{}.", record.kind.as_str());
        let mut value: Value = serde_json::from_str(&record.body).ok()?;
        let mut withheld = Vec::new();
        for path in paths {
            if empty_path(&mut value, path) {
                withheld.push(format!("{prefix}{path}"));
            }
        }
        Some(Outgoing {
            body: value.to_string(),
            withheld,
        })
    }
}

/// A record as it is.
fn whole(record: &StoredRecord) -> Outgoing {
    Outgoing {
        body: record.body.clone(),
        withheld: Vec::new(),
    }
}

/// The party of a resource name `parties/{party}/...`.
fn owner_of(name: &str) -> Option<&str> {
    name.strip_prefix("parties/")?.split('/').next()
}

#[cfg(test)]
mod tests;
