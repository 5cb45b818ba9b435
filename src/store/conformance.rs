//! The storage conformance suite: every guarantee of the [`Store`] trait, written once as
//! functions over `Arc<dyn Store>`. Each backend's tests run all of them through
//! [`conformance_tests!`](crate::conformance_tests) with a factory for a fresh, empty store, so
//! a behaviour exists in every backend or in none. Split like the store: one file each for
//! records and writes, replication, and the audit chain.

use uuid::Uuid;

use super::{Idempotency, IndexFields, Store, StoreError, StoredRecord, Write, WriteOutcome};
use crate::domain::RecordKind;

mod audit;
mod records;
mod replication;

pub use audit::*;
pub use records::*;
pub use replication::*;

pub fn record(owner: &str, id: Uuid, revision: i64, body: &str) -> StoredRecord {
    StoredRecord {
        kind: RecordKind::Project,
        owner: owner.into(),
        id,
        revision,
        index: IndexFields {
            stage: Some("lead".into()),
            ..IndexFields::default()
        },
        body: body.into(),
    }
}

pub fn write(record: StoredRecord, expected_revision: Option<i64>, request_id: &str) -> Write {
    Write {
        resend: None,
        audit: None,
        key: Idempotency {
            party: record.owner.clone(),
            request_id: request_id.into(),
            fingerprint: format!("{request_id}/{}", record.body).into_bytes(),
        },
        record,
        expected_revision,
        also_create: vec![],
        unique: None,
        time: 1,
    }
}

fn applied(outcome: Result<WriteOutcome, StoreError>) -> StoredRecord {
    match outcome {
        Ok(WriteOutcome::Applied(r)) => r,
        other => panic!("expected Applied, got {other:?}"),
    }
}

async fn seqs(store: &dyn Store, owner: &str) -> Vec<u64> {
    let changes = store.changes(owner, 0, 10_000).await.unwrap();
    changes.iter().map(|c| c.seq).collect()
}

/// One `#[tokio::test]` per conformance function, each on a fresh store from `$factory`
/// (an expression evaluating to `Arc<dyn Store>`; it may use `dir`, a temporary folder).
#[macro_export]
macro_rules! conformance_tests {
    (|$dir:ident| $factory:expr) => {
        $crate::conformance_tests!(@each |$dir| $factory;
            create_read_update_and_refusals,
            retries_return_the_first_result,
            concurrent_writes_keep_their_own_outcomes,
            unique_keys_and_companion_records,
            replicas_apply_in_order_and_once,
            widening_writes_send_records_again,
            redaction_rewrites_every_copy_and_keeps_the_received_hash,
            own_changes_taken_back_follow_the_head,
            lists_filter_and_page,
            the_audit_chain_is_single_and_verifiable,
            a_write_commits_its_calls_audit_event_with_itself
        );
    };
    (@each |$dir:ident| $factory:expr; $($name:ident),*) => {
        $(
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn $name() {
                let $dir = tempfile::tempdir().unwrap();
                let store: std::sync::Arc<dyn $crate::store::Store> = $factory;
                $crate::store::conformance::$name(store).await;
            }
        )*
    };
}
