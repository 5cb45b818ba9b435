//! `CatalogService`: publishing, updating, reading and listing resource catalog entries.
//! Authorization already happened in the [`super::authz`] layer (a party's systems write only
//! through their own gateway, and only their party's entries reach [`Records`] as writes).

use tonic::{Request, Response, Status};

use super::calls::AuditRecords;
use super::error::{bad_request, record_status};
use super::write_meta;
use crate::records::{CatalogFilter, Page, Records, Violations};
use crate::wire::catalog::{
    catalog_entry_from, catalog_entry_to, record_kind_from, sharing_class_from,
};
use crate::wire::pb;

#[derive(Clone)]
pub struct CatalogApi {
    records: Records,
}

impl CatalogApi {
    pub fn new(records: Records) -> Self {
        CatalogApi { records }
    }
}

#[tonic::async_trait]
impl pb::catalog_service_server::CatalogService for CatalogApi {
    async fn publish_catalog_entry(
        &self,
        request: Request<pb::PublishCatalogEntryRequest>,
    ) -> Result<Response<pb::PublishCatalogEntryResponse>, Status> {
        let audit = AuditRecords::of(&request);
        let req = request.into_inner();
        let meta = write_meta(&audit, &req, &req.request_id, |m| m.request_id.clear());
        let mut v = Violations::new();
        let entry = match req.entry {
            Some(e) => catalog_entry_from(e, &mut v),
            None => {
                v.add("entry", "is required");
                catalog_entry_from(pb::CatalogEntry::default(), &mut Violations::new())
            }
        };
        let published = self
            .records
            .publish_catalog_entry(entry, meta, v)
            .await
            .map_err(record_status)?;
        let published = catalog_entry_to(published);
        audit.note(published.name.clone());
        Ok(Response::new(pb::PublishCatalogEntryResponse {
            entry: Some(published),
        }))
    }

    async fn update_catalog_entry(
        &self,
        request: Request<pb::UpdateCatalogEntryRequest>,
    ) -> Result<Response<pb::UpdateCatalogEntryResponse>, Status> {
        let audit = AuditRecords::of(&request);
        let req = request.into_inner();
        let meta = write_meta(&audit, &req, &req.request_id, |m| m.request_id.clear());
        let mut v = Violations::new();
        let Some(wire) = req.entry else {
            v.add("entry", "is required");
            return Err(bad_request(&v));
        };
        let name = wire.name.clone();
        audit.note(name.clone());
        let etag = wire.etag.clone();
        let patch = catalog_entry_from(wire, &mut v);
        let mask = req.update_mask.map(|m| m.paths).unwrap_or_default();
        let updated = self
            .records
            .update_catalog_entry(&name, &etag, patch, mask, meta, v)
            .await
            .map_err(record_status)?;
        Ok(Response::new(pb::UpdateCatalogEntryResponse {
            entry: Some(catalog_entry_to(updated)),
        }))
    }

    async fn get_catalog_entry(
        &self,
        request: Request<pb::GetCatalogEntryRequest>,
    ) -> Result<Response<pb::GetCatalogEntryResponse>, Status> {
        let audit = AuditRecords::of(&request);
        audit.note(request.get_ref().name.clone());
        let entry = self
            .records
            .get_catalog_entry(&request.get_ref().name)
            .await
            .map_err(record_status)?;
        Ok(Response::new(pb::GetCatalogEntryResponse {
            entry: Some(catalog_entry_to(entry)),
        }))
    }

    async fn list_catalog_entries(
        &self,
        request: Request<pb::ListCatalogEntriesRequest>,
    ) -> Result<Response<pb::ListCatalogEntriesResponse>, Status> {
        let req = request.into_inner();
        let mut v = Violations::new();
        let filter = CatalogFilter {
            provider: req.provider,
            record_kind: record_kind_from(req.record_kind, "record_kind", &mut v),
            sharing_class: sharing_class_from(req.sharing_class, "sharing_class", &mut v),
        };
        if !v.is_empty() {
            return Err(bad_request(&v));
        }
        let page = Page {
            size: req.page_size,
            token: req.page_token,
        };
        let (entries, next) = self
            .records
            .list_catalog_entries(&filter, &page)
            .await
            .map_err(record_status)?;
        Ok(Response::new(pb::ListCatalogEntriesResponse {
            entries: entries.into_iter().map(catalog_entry_to).collect(),
            next_page_token: next,
        }))
    }
}
