//! Project referral (项目共推 / 项目引荐): the owner hands a project lead to another party. The
//! referral is owned by the referring party, the answer by the receiving party; the state is
//! derived from the two, never written by both.

use serde::{Deserialize, Serialize};
use uuid::Uuid;

/// A project handed to another party.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Referral {
    pub id: Uuid,
    /// The referring party, which owns the project.
    pub owner: String,
    /// Resource name of the project referred.
    pub project: String,
    /// The party the lead is handed to.
    pub to_party: String,
    /// Why the lead fits the other party better.
    pub reason: String,
    pub revision: i64,
    pub create_time: i64,
    pub update_time: i64,
}

/// The receiving party's answer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReferralResponse {
    pub id: Uuid,
    /// The receiving party.
    pub owner: String,
    /// Resource name of the referral answered.
    pub referral: String,
    pub accept: bool,
    pub comment: String,
    /// On accept: resource name of the new project the receiver owns.
    pub new_project: Option<String>,
    pub revision: i64,
    pub create_time: i64,
    pub update_time: i64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReferralState {
    Pending,
    Accepted,
    Declined,
}

impl ReferralResponse {
    pub fn state(response: Option<&ReferralResponse>) -> ReferralState {
        match response {
            None => ReferralState::Pending,
            Some(r) if r.accept => ReferralState::Accepted,
            Some(_) => ReferralState::Declined,
        }
    }
}
