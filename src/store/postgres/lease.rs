//! The pull lease (a session-scoped advisory lock on a connection of its own), health and
//! checkpoint on PostgreSQL.

use async_trait::async_trait;

use super::*;
use crate::store::*;

#[async_trait]
impl LeaseStore for PostgresStore {
    async fn ping(&self) -> Result<(), StoreError> {
        let (client, task) = self.session().await?;
        let checked = tokio::time::timeout(
            SESSION_TIMEOUT,
            client.query_one("SELECT version FROM schema_version", &[]),
        )
        .await;
        drop(client);
        task.abort();
        let version: i32 = checked
            .map_err(|_| unavailable("postgres did not answer within 5 s"))?
            .map_err(db)?
            .try_get(0)
            .map_err(db)?;
        if version != MIGRATIONS.len() as i32 {
            return Err(unavailable(format!(
                "database has schema version {version}, expected {}",
                MIGRATIONS.len()
            )));
        }
        Ok(())
    }

    async fn checkpoint(&self) -> Result<(), StoreError> {
        // The server owns its files; every commit already reached its WAL.
        Ok(())
    }

    async fn pull_lease(&self, peer: &str) -> Result<Option<PullLease>, StoreError> {
        let (client, mut task) = self.session().await?;
        let held: bool = client
            .query_one(
                "SELECT pg_try_advisory_lock($1, hashtext($2))",
                &[&LOCK_SPACE, &format!("pull:{peer}")],
            )
            .await
            .map_err(db)?
            .try_get(0)
            .map_err(db)?;
        if !held {
            drop(client);
            task.abort();
            return Ok(None);
        }
        // Held while this future lives: it owns the session. It resolves when the session
        // ends or stops answering; dropping it closes the session, which releases the lock.
        let lost = async move {
            loop {
                tokio::select! {
                    _ = &mut task => return,
                    _ = tokio::time::sleep(LEASE_CHECK) => {}
                }
                let answered =
                    tokio::time::timeout(SESSION_TIMEOUT, client.simple_query("SELECT 1")).await;
                if !matches!(answered, Ok(Ok(_))) {
                    task.abort();
                    return;
                }
            }
        };
        Ok(Some(PullLease::until(Box::pin(lost))))
    }
}
