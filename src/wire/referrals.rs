//! Conversions of project referrals (项目引荐) between wire messages and domain records.

use super::pb;
use super::{known, timestamp};
use crate::domain::RecordKind;
use crate::records::{ReferralState, ReferralView, ResourceName, Violations};

pub fn referral_state_from(value: i32, field: &str, v: &mut Violations) -> Option<ReferralState> {
    use pb::ReferralState as R;
    match known::<R>(value, field, v) {
        None | Some(R::Unspecified) => None,
        Some(R::Pending) => Some(ReferralState::Pending),
        Some(R::Accepted) => Some(ReferralState::Accepted),
        Some(R::Declined) => Some(ReferralState::Declined),
    }
}

pub fn referral_to(view: ReferralView) -> pb::Referral {
    let r = view.referral;
    let state = match view.state {
        ReferralState::Pending => pb::ReferralState::Pending,
        ReferralState::Accepted => pb::ReferralState::Accepted,
        ReferralState::Declined => pb::ReferralState::Declined,
    };
    let response = view.response;
    pb::Referral {
        name: ResourceName::new(&r.owner, RecordKind::Referral, r.id).to_string(),
        from_party: r.owner,
        to_party: r.to_party,
        project: r.project,
        reason: r.reason,
        state: state as i32,
        response_comment: response
            .as_ref()
            .map(|x| x.comment.clone())
            .unwrap_or_default(),
        accepted_project: response
            .as_ref()
            .and_then(|x| x.new_project.clone())
            .unwrap_or_default(),
        create_time: Some(timestamp(r.create_time)),
        response_time: response.map(|x| timestamp(x.create_time)),
    }
}
