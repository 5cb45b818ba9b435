//! Paging of every list (AIP-158): page sizes, tokens bound to the filters they were issued
//! for, and the scan that fills a page when a filter is on derived state.

use futures_util::future::BoxFuture;
use sha2::{Digest, Sha256};
use uuid::Uuid;

use super::Records;
use crate::records::{RecordError, Violations};
use crate::store::{ListQuery, StoredRecord};

/// Page size when the request gives none (AIP-158).
pub const DEFAULT_PAGE_SIZE: usize = 50;
/// Larger page sizes are lowered to this (AIP-158).
pub const MAX_PAGE_SIZE: usize = 500;

/// A page request (AIP-158).
#[derive(Debug, Clone, Default)]
pub struct Page {
    pub size: i32,
    pub token: String,
}

impl Records {
    /// One page of a list call: checks the party filters (`parties`: request field and party
    /// id) and the page request,
    /// then scans `query` (its filters set; `after` and `limit` come from the page) keeping what
    /// `keep` returns. `fingerprint` names the filters, so a page token is accepted only with
    /// the filters it was issued for.
    pub(super) async fn list_page<'a, T: Send + 'a>(
        &'a self,
        parties: &[(&str, &str)],
        fingerprint: String,
        page: &Page,
        query: ListQuery,
        keep: impl FnMut(StoredRecord) -> BoxFuture<'a, Result<Option<T>, RecordError>> + Send,
    ) -> Result<(Vec<T>, String), RecordError> {
        let mut v = Violations::new();
        for (field, party) in parties {
            if !party.is_empty() && !self.federation().contains(party) {
                v.add(
                    *field,
                    format!("`{party}` is not a member of the federation"),
                );
            }
        }
        let (after, limit) = parse_page(page, &fingerprint, &mut v);
        v.into_result()?;
        let query = ListQuery {
            after,
            limit,
            ..query
        };
        self.scan_page(query, &fingerprint, keep).await
    }

    /// One page of `query` (whose `limit` is the page size), keeping what `keep` returns.
    /// Filters on derived state (an allocation's status, a referral's state) live in `keep`,
    /// so the scan reads on until the page is full; the token resumes after the last record
    /// examined.
    pub(super) async fn scan_page<'a, T: Send + 'a>(
        &'a self,
        mut query: ListQuery,
        fingerprint: &str,
        mut keep: impl FnMut(StoredRecord) -> BoxFuture<'a, Result<Option<T>, RecordError>> + Send,
    ) -> Result<(Vec<T>, String), RecordError> {
        let limit = query.limit;
        query.limit = limit + 1;
        let mut out = Vec::new();
        loop {
            let rows = self.store.list(query.clone()).await?;
            let exhausted = rows.len() <= limit;
            for row in rows {
                if out.len() == limit {
                    return Ok((
                        out,
                        page_token(query.after.unwrap_or_default(), fingerprint),
                    ));
                }
                query.after = Some(row.id);
                if let Some(item) = keep(row).await? {
                    out.push(item);
                }
            }
            if exhausted {
                return Ok((out, String::new()));
            }
        }
    }
}

/// A page token: the last id returned plus a hash of the filters it was issued for, hex-encoded.
pub(crate) fn page_token(last: Uuid, fingerprint: &str) -> String {
    let mut bytes = last.as_bytes().to_vec();
    bytes.extend_from_slice(&Sha256::digest(fingerprint.as_bytes())[..8]);
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Reads page size and token; returns (after, limit).
pub(crate) fn parse_page(
    page: &Page,
    fingerprint: &str,
    v: &mut Violations,
) -> (Option<Uuid>, usize) {
    let limit = match page.size {
        s if s < 0 => {
            v.add("page_size", "must not be negative");
            DEFAULT_PAGE_SIZE
        }
        0 => DEFAULT_PAGE_SIZE,
        s => (s as usize).min(MAX_PAGE_SIZE),
    };
    if page.token.is_empty() {
        return (None, limit);
    }
    let bytes: Option<Vec<u8>> = (page.token.len() == 48)
        .then(|| {
            (0..48)
                .step_by(2)
                .map(|i| u8::from_str_radix(page.token.get(i..i + 2)?, 16).ok())
                .collect()
        })
        .flatten();
    match bytes {
        Some(b) if b[16..] == Sha256::digest(fingerprint.as_bytes())[..8] => {
            (Some(Uuid::from_slice(&b[..16]).unwrap_or_default()), limit)
        }
        Some(_) => {
            v.add(
                "page_token",
                "was issued for different filters; keep the filters unchanged while paging",
            );
            (None, limit)
        }
        None => {
            v.add("page_token", "is not a token this service issued");
            (None, limit)
        }
    }
}
