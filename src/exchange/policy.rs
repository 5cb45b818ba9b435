//! The owner's sharing policy: for each peer, the record kinds it receives and the fields
//! emptied before a record leaves the owner.

use std::collections::{BTreeSet, HashMap};

use serde_json::Value;

use crate::config::ShareRule;
use crate::domain::RecordKind;
use crate::store::StoredRecord;

#[derive(Debug, Clone, Default)]
pub struct SharingPolicy {
    by_peer: HashMap<String, ShareRule>,
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
    pub fn new(rules: &[ShareRule]) -> Self {
        SharingPolicy {
            by_peer: rules.iter().map(|r| (r.peer.clone(), r.clone())).collect(),
            coordinator: None,
        }
    }

    /// Sends every access request and answer to `coordinator` too.
    pub fn with_coordinator(mut self, coordinator: &str) -> Self {
        self.coordinator = Some(coordinator.to_string());
        self
    }

    /// What `peer` may see of `record`: `None` when the kind is not shared with it. Catalog
    /// entries go to every member whole: what a party shares, and how, is public within the
    /// federation. Access requests and answers go to the other party of the request and to the
    /// coordinating party.
    pub fn outgoing(&self, peer: &str, record: &StoredRecord) -> Option<Outgoing> {
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
        let rule = self.by_peer.get(peer)?;
        if !rule.kinds.contains(&record.kind) {
            return None;
        }
        let prefix = format!("{}.", record.kind.as_str());
        let paths: BTreeSet<&str> = rule
            .withhold
            .iter()
            .filter_map(|p| p.strip_prefix(&prefix))
            .collect();
        if paths.is_empty() {
            return Some(Outgoing {
                body: record.body.clone(),
                withheld: Vec::new(),
            });
        }
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

    /// Kinds `peer` receives.
    pub fn kinds_for(&self, peer: &str) -> BTreeSet<RecordKind> {
        self.by_peer
            .get(peer)
            .map(|r| r.kinds.clone())
            .unwrap_or_default()
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

/// Replaces the value at a dotted path by the empty value of its type. Returns false when the
/// path does not exist (nothing to withhold).
fn empty_path(value: &mut Value, path: &str) -> bool {
    let mut target = value;
    for segment in path.split('.') {
        match target.get_mut(segment) {
            Some(next) => target = next,
            None => return false,
        }
    }
    *target = emptied(target);
    true
}

fn emptied(v: &Value) -> Value {
    match v {
        Value::String(_) => Value::String(String::new()),
        Value::Number(_) => Value::from(0),
        Value::Bool(_) => Value::Bool(false),
        Value::Array(_) => Value::Array(Vec::new()),
        Value::Object(map) => {
            Value::Object(map.iter().map(|(k, v)| (k.clone(), emptied(v))).collect())
        }
        Value::Null => Value::Null,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(body: &str) -> StoredRecord {
        StoredRecord {
            kind: RecordKind::Project,
            owner: "zone".into(),
            id: uuid::Uuid::nil(),
            revision: 1,
            index: Default::default(),
            body: body.into(),
        }
    }

    #[test]
    fn withheld_fields_are_emptied_and_named() {
        let policy = SharingPolicy::new(&[ShareRule {
            peer: "guangde".into(),
            kinds: [RecordKind::Project].into(),
            withhold: [
                "project.contact.phone".to_string(),
                "allocation.description".to_string(),
            ]
            .into(),
        }]);
        let rec = record(r#"{"contact":{"name":"张三","phone":"+86 138"},"labels":{"a":"b"}}"#);
        let out = policy.outgoing("guangde", &rec).unwrap();
        let v: Value = serde_json::from_str(&out.body).unwrap();
        assert_eq!(v["contact"]["phone"], "");
        assert_eq!(v["contact"]["name"], "张三");
        assert_eq!(v["labels"]["a"], "b");
        assert_eq!(out.withheld, vec!["project.contact.phone".to_string()]);
        assert!(
            policy.outgoing("anji", &rec).is_none(),
            "no rule: nothing shared"
        );
        let mut alloc = rec.clone();
        alloc.kind = RecordKind::Allocation;
        assert!(
            policy.outgoing("guangde", &alloc).is_none(),
            "kind not granted"
        );
    }

    #[test]
    fn catalog_entries_reach_every_peer_whole_whatever_the_rules() {
        let policy = SharingPolicy::new(&[]);
        let mut entry = record(r#"{"resource_code":"CX-1","conditions":"c"}"#);
        entry.kind = RecordKind::CatalogEntry;
        let out = policy.outgoing("anji", &entry).expect("sent");
        assert_eq!(out.body, entry.body);
        assert!(out.withheld.is_empty());
    }

    #[test]
    fn an_access_request_goes_to_its_provider_and_an_answer_to_its_requester_and_both_to_the_coordinator()
     {
        let policy = SharingPolicy::new(&[]).with_coordinator("zone");
        let mut request = record("{}");
        request.kind = RecordKind::AccessRequest;
        request.owner = "guangde".into();
        request.index.parent = Some("parties/changxing/catalogEntries/x".into());
        assert!(policy.outgoing("changxing", &request).is_some());
        assert!(policy.outgoing("zone", &request).is_some());
        assert!(policy.outgoing("anji", &request).is_none());
        let mut answer = record("{}");
        answer.kind = RecordKind::AccessAnswer;
        answer.owner = "changxing".into();
        answer.index.parent = Some("parties/guangde/accessRequests/y".into());
        assert!(policy.outgoing("guangde", &answer).is_some());
        assert!(policy.outgoing("zone", &answer).is_some());
        assert!(policy.outgoing("anji", &answer).is_none());
    }
}
