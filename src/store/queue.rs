//! Group commit of record writes: writes wait in a [`WriteQueue`] while one [`Drain`] applies
//! everything queued per transaction. Both backends use it.

use std::sync::{Arc, Mutex};

use tokio::sync::oneshot;

use super::{StoreError, Write, WriteAudit, WriteOutcome};

/// A record write waiting for the next group commit, and where its answer goes.
pub(crate) type QueuedWrite = (Write, oneshot::Sender<Result<WriteOutcome, StoreError>>);

/// A write of a group, applied or refused inside the group's transaction, waiting for the
/// commit before it is answered.
pub(crate) type Answer = (
    oneshot::Sender<Result<WriteOutcome, StoreError>>,
    Result<WriteOutcome, StoreError>,
);

/// Fails every write of a group whose transaction could not start: each gets the cause.
pub(crate) fn fail_all(queued: Vec<QueuedWrite>, e: StoreError) {
    for (_, reply) in queued {
        let _ = reply.send(Err(StoreError::Unavailable(e.cause())));
    }
}

/// Answers every write of a group once its transaction has ended. After a commit each gets
/// its own result, and the audit events committed with the group (`audited`, ending at
/// sequence number `last`) are marked committed; after a failed commit every write gets the
/// commit's cause, whatever its own result was (nothing of the group was written).
pub(crate) fn answer_after_commit(
    answers: Vec<Answer>,
    audited: &[WriteAudit],
    committed: Result<u64, StoreError>,
) {
    match committed {
        Ok(last) => {
            WriteAudit::mark_committed(audited, last);
            for (reply, result) in answers {
                let _ = reply.send(result);
            }
        }
        Err(e) => {
            for (reply, _) in answers {
                let _ = reply.send(Err(StoreError::Unavailable(e.cause())));
            }
        }
    }
}

/// Record writes waiting for a group commit, and whether a drain is running. The first write
/// queued while none runs starts one ([`Drain`]); the drain applies everything queued in one
/// transaction, looks again, and stops when it finds the queue empty. A burst of concurrent
/// writes so costs one writer task and one commit per round, not a task each.
#[derive(Clone, Default)]
pub(crate) struct WriteQueue(Arc<Mutex<Queued>>);

#[derive(Default)]
struct Queued {
    writes: Vec<QueuedWrite>,
    draining: bool,
}

impl WriteQueue {
    fn lock(&self) -> std::sync::MutexGuard<'_, Queued> {
        self.0.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Queues `write`; the receiver gets its answer after the commit that applies it. Returns
    /// a drain when none is running: the caller must run it (on a task of its own, so a caller
    /// that goes away cannot cut a group commit short).
    pub(crate) fn push(
        &self,
        write: Write,
    ) -> (
        oneshot::Receiver<Result<WriteOutcome, StoreError>>,
        Option<Drain>,
    ) {
        let (reply, answer) = oneshot::channel();
        let mut queued = self.lock();
        queued.writes.push((write, reply));
        let start = !std::mem::replace(&mut queued.draining, true);
        let drain = start.then(|| Drain {
            queue: self.clone(),
            done: false,
        });
        (answer, drain)
    }
}

/// The one running drain of a [`WriteQueue`].
pub(crate) struct Drain {
    queue: WriteQueue,
    done: bool,
}

impl Drain {
    /// Everything queued since the last batch; `None` when nothing is, which ends the drain
    /// (the next write queued starts another).
    pub(crate) fn next_batch(&mut self) -> Option<Vec<QueuedWrite>> {
        let mut queued = self.queue.lock();
        if queued.writes.is_empty() {
            queued.draining = false;
            self.done = true;
            return None;
        }
        Some(std::mem::take(&mut queued.writes))
    }
}

impl Drop for Drain {
    /// A drain that ends before the queue is empty (its task panicked or was cancelled) fails
    /// what is still queued instead of leaving it waiting, and lets the next write start anew.
    fn drop(&mut self) {
        if self.done {
            return;
        }
        let rest = {
            let mut queued = self.queue.lock();
            queued.draining = false;
            std::mem::take(&mut queued.writes)
        };
        for (_, reply) in rest {
            let _ = reply.send(Err(StoreError::Unavailable(
                "the store writer stopped before applying this write; retry it".into(),
            )));
        }
    }
}

/// Waits for a queued write's answer.
pub(crate) async fn answer_of(
    answer: oneshot::Receiver<Result<WriteOutcome, StoreError>>,
) -> Result<WriteOutcome, StoreError> {
    answer
        .await
        .map_err(|_| StoreError::Unavailable("the store writer dropped a queued write".into()))?
}

#[cfg(test)]
mod tests;
