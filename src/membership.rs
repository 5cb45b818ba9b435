//! Whether every gateway of the federation has the same party list.
//!
//! Each gateway reads its party list (`[[parties]]`) from its own configuration, and the list
//! must be the same everywhere: party ids name records and identities, and the order breaks
//! ties between competing counter-proposals. Nothing else checks that, so each gateway
//! publishes a digest of its list — with every `PullChanges` request it sends and every
//! response it serves — and keeps the digest each peer last showed. A peer whose digest
//! differs is named on the status page, in `ListParties`, in the metric
//! `yrd_membership_differs{peer}` and in a warning when it starts to differ.
//!
//! The digest is SHA-256 over a canonical text of the list, so an operator can compute it by
//! hand: the line `yrd-membership/1`; in a federation of the `gm` crypto profile the line
//! `crypto gm` (the `intl` profile adds none, so its digest is what gateways older than
//! profiles show); then per party in order one line of id, display name, province and
//! division code separated by tabs — and a fifth field `suspended` for a suspended party —
//! each line ending in `\n`. A peer of another profile therefore shows as differing.

pub mod reload;

use std::collections::BTreeMap;
use std::sync::Mutex;

use sha2::{Digest, Sha256};

use crate::crypto::Profile;
use crate::domain::{Federation, Members};

/// The SHA-256 of the canonical text of `federation` in `profile` (see the module
/// documentation).
pub fn digest(federation: &Federation, profile: Profile) -> [u8; 32] {
    let mut text = String::from("yrd-membership/1\n");
    if profile != Profile::Intl {
        text.push_str(&format!("crypto {profile}\n"));
    }
    for p in federation.parties() {
        for (i, field) in [&p.id, &p.display_name, &p.province, &p.division_code]
            .into_iter()
            .enumerate()
        {
            if i > 0 {
                text.push('\t');
            }
            // Tabs and line ends inside a field would make two lists read alike.
            text.extend(
                field
                    .chars()
                    .map(|c| if c == '\t' || c == '\n' { ' ' } else { c }),
            );
        }
        if p.suspended {
            text.push_str("\tsuspended");
        }
        text.push('\n');
    }
    Sha256::digest(text.as_bytes()).into()
}

/// Lowercase hex of a digest.
pub fn hex(digest: &[u8]) -> String {
    digest.iter().map(|b| format!("{b:02x}")).collect()
}

/// What a peer last showed of its party list.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct View {
    pub party: String,
    pub digest: [u8; 32],
    /// When it was last shown (microseconds since the epoch).
    pub seen_at: i64,
    /// Whether it differs from this gateway's.
    pub differs: bool,
}

/// This gateway's digest and the digests its peers showed.
#[derive(Debug)]
pub struct Membership {
    members: Members,
    profile: Profile,
    views: Mutex<BTreeMap<String, View>>,
}

impl Membership {
    pub fn new(members: Members, profile: Profile) -> Membership {
        Membership {
            members,
            profile,
            views: Mutex::default(),
        }
    }

    /// The crypto profile this gateway runs in (part of the digest).
    pub fn profile(&self) -> Profile {
        self.profile
    }

    /// The party list this digest is of, to follow its changes.
    pub fn members(&self) -> &Members {
        &self.members
    }

    /// This gateway's digest of its party list as it is now.
    pub fn own(&self) -> [u8; 32] {
        digest(&self.members.current(), self.profile)
    }

    /// Notes the digest `party` showed at `at`. An empty or malformed one (a gateway older
    /// than digests) says nothing and is ignored. Logs when a peer starts or stops differing.
    pub fn seen(&self, party: &str, shown: &[u8], at: i64) {
        let Ok(digest) = <[u8; 32]>::try_from(shown) else {
            return;
        };
        let own = self.own();
        let differs = digest != own;
        let mut views = self.views.lock().unwrap_or_else(|e| e.into_inner());
        let before = views.get(party).map(|v| v.differs);
        if differs && before != Some(true) {
            tracing::warn!(
                peer = party,
                theirs = %hex(&digest),
                ours = %hex(&own),
                "the peer's party list differs from ours: compare [[parties]] and [crypto] profile in both configurations"
            );
        } else if !differs && before == Some(true) {
            tracing::info!(peer = party, "the peer's party list is ours again");
        }
        views.insert(
            party.to_string(),
            View {
                party: party.to_string(),
                digest,
                seen_at: at,
                differs,
            },
        );
    }

    /// What each peer last showed, by party, compared with this gateway's list as it is now
    /// (which may have changed since). Peers no longer in the list are not shown.
    pub fn views(&self) -> Vec<View> {
        let (own, federation) = (self.own(), self.members.current());
        let views = self.views.lock().unwrap_or_else(|e| e.into_inner());
        views
            .values()
            .filter(|v| federation.contains(&v.party))
            .map(|v| View {
                differs: v.digest != own,
                ..v.clone()
            })
            .collect()
    }

    /// The peers whose last digest differs from this gateway's.
    pub fn differing(&self) -> Vec<String> {
        self.views()
            .into_iter()
            .filter(|v| v.differs)
            .map(|v| v.party)
            .collect()
    }
}

#[cfg(test)]
mod tests;
