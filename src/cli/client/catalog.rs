//! `yrd-gateway client catalog …`: publish, read and list resource catalog entries.

use clap::{Subcommand, ValueEnum};
use tonic::transport::Channel;

use super::explain;
use crate::wire::pb;
use crate::wire::pb::catalog_service_client::CatalogServiceClient;

#[derive(Debug, Subcommand)]
pub enum CatalogCommand {
    /// Publish an entry of this party's catalog.
    Publish {
        /// The party's code of the resource, e.g. CX-PROJECT-001.
        #[arg(long)]
        code: String,
        /// Name of the resource, e.g. 长兴县招商项目信息.
        #[arg(long)]
        name: String,
        /// The record kind the entry covers.
        #[arg(long, value_enum)]
        kind: RecordKindArg,
        /// The class of items that name none.
        #[arg(long, value_enum)]
        class: ClassArg,
        /// A data item: FIELD, FIELD=CLASS, FIELD=not-shared:LEGAL BASIS or
        /// FIELD=conditional@PARTY,PARTY (open to those parties without a request); repeated.
        #[arg(long = "item", value_parser = parse_item, required = true)]
        items: Vec<pb::DataItem>,
        /// Legal basis, when --class is not-shared.
        #[arg(long, default_value = "")]
        legal_basis: String,
        #[arg(long, default_value = "")]
        summary: String,
        /// Conditions of use of the conditional items.
        #[arg(long, default_value = "")]
        conditions: String,
        #[arg(long, default_value = "")]
        update_cycle: String,
    },
    /// Read one entry by name.
    Get { name: String },
    /// List entries of every party, or of one.
    List {
        /// Only this party's entries.
        #[arg(long, default_value = "")]
        provider: String,
    },
}

#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum RecordKindArg {
    Project,
    Allocation,
    Decision,
    Referral,
}

#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum ClassArg {
    Unconditional,
    Conditional,
    NotShared,
}

fn class(c: ClassArg) -> pb::SharingClass {
    match c {
        ClassArg::Unconditional => pb::SharingClass::Unconditional,
        ClassArg::Conditional => pb::SharingClass::Conditional,
        ClassArg::NotShared => pb::SharingClass::NotShared,
    }
}

fn kind(k: RecordKindArg) -> pb::RecordKind {
    match k {
        RecordKindArg::Project => pb::RecordKind::Project,
        RecordKindArg::Allocation => pb::RecordKind::Allocation,
        RecordKindArg::Decision => pb::RecordKind::Decision,
        RecordKindArg::Referral => pb::RecordKind::Referral,
    }
}

/// `FIELD`, `FIELD=CLASS`, `FIELD=not-shared:LEGAL BASIS` or
/// `FIELD=conditional@PARTY,PARTY` (open to those parties without a request).
fn parse_item(s: &str) -> Result<pb::DataItem, String> {
    let (field, rest) = s.split_once('=').unwrap_or((s, ""));
    let (class_name, legal_basis) = rest.split_once(':').unwrap_or((rest, ""));
    let (class_name, open_to) = match class_name.split_once('@') {
        Some((c, parties)) => (c, parties.split(',').map(str::to_string).collect()),
        None => (class_name, Vec::new()),
    };
    let sharing_class =
        match class_name {
            "" => pb::SharingClass::Unspecified,
            other => class(ClassArg::from_str(other, true).map_err(|_| {
                format!("`{other}` is not unconditional, conditional or not-shared")
            })?),
        };
    Ok(pb::DataItem {
        field: field.to_string(),
        r#type: String::new(),
        description: String::new(),
        sharing_class: sharing_class as i32,
        legal_basis: legal_basis.to_string(),
        open_to,
    })
}

fn class_name(value: i32) -> &'static str {
    pb::SharingClass::try_from(value)
        .map(|c| c.as_str_name())
        .unwrap_or("?")
}

fn print_entry(e: &pb::CatalogEntry) {
    let kind = pb::RecordKind::try_from(e.record_kind)
        .map(|k| k.as_str_name())
        .unwrap_or("?");
    say!("{}", e.name);
    say!("  {} {}  ({kind})", e.resource_code, e.display_name);
    say!(
        "  provider: {}  class: {}  update cycle: {}",
        e.provider,
        class_name(e.sharing_class),
        e.update_cycle
    );
    if !e.legal_basis.is_empty() {
        say!("  legal basis: {}", e.legal_basis);
    }
    if !e.conditions.is_empty() {
        say!("  conditions: {}", e.conditions);
    }
    for item in &e.items {
        let own = if item.sharing_class == 0 {
            class_name(e.sharing_class)
        } else {
            class_name(item.sharing_class)
        };
        let basis = if item.legal_basis.is_empty() {
            String::new()
        } else {
            format!(" ({})", item.legal_basis)
        };
        let open = if item.open_to.is_empty() {
            String::new()
        } else {
            format!(", open to {}", item.open_to.join(", "))
        };
        say!("  - {}: {own}{basis}{open}", item.field);
    }
    say!("  etag: {}", e.etag);
}

pub(super) async fn run(channel: Channel, cmd: CatalogCommand) -> anyhow::Result<()> {
    let mut client = CatalogServiceClient::new(channel);
    match cmd {
        CatalogCommand::Publish {
            code,
            name,
            kind: k,
            class: c,
            items,
            legal_basis,
            summary,
            conditions,
            update_cycle,
        } => {
            let entry = client
                .publish_catalog_entry(pb::PublishCatalogEntryRequest {
                    entry: Some(pb::CatalogEntry {
                        resource_code: code,
                        display_name: name,
                        summary,
                        record_kind: kind(k) as i32,
                        items,
                        sharing_class: class(c) as i32,
                        legal_basis,
                        conditions,
                        update_cycle,
                        ..Default::default()
                    }),
                    request_id: uuid::Uuid::now_v7().to_string(),
                })
                .await
                .map_err(explain)?
                .into_inner()
                .entry
                .unwrap_or_default();
            print_entry(&entry);
        }
        CatalogCommand::Get { name } => {
            let entry = client
                .get_catalog_entry(pb::GetCatalogEntryRequest { name })
                .await
                .map_err(explain)?
                .into_inner()
                .entry
                .unwrap_or_default();
            print_entry(&entry);
        }
        CatalogCommand::List { provider } => {
            let mut page_token = String::new();
            loop {
                let page = client
                    .list_catalog_entries(pb::ListCatalogEntriesRequest {
                        provider: provider.clone(),
                        page_token,
                        ..Default::default()
                    })
                    .await
                    .map_err(explain)?
                    .into_inner();
                page.entries.iter().for_each(print_entry);
                if page.next_page_token.is_empty() {
                    break;
                }
                page_token = page.next_page_token;
            }
        }
    }
    Ok(())
}
