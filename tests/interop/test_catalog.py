"""The resource catalog from Python: a county system publishes its party's entry, another
party's system finds it with one List call naming the provider, bad entries are refused field
by field, and only the provider may change an entry."""

import uuid

import grpc
from google.protobuf import field_mask_pb2

from support import eventually, failure, new_request_id
from yrd.exchange.v1 import catalog_pb2, common_pb2


def phones_entry(code: str) -> catalog_pb2.CatalogEntry:
    return catalog_pb2.CatalogEntry(
        resource_code=code,
        display_name="长兴县招商项目联系人",
        record_kind=common_pb2.RECORD_KIND_PROJECT,
        sharing_class=catalog_pb2.SHARING_CLASS_UNCONDITIONAL,
        items=[
            catalog_pb2.DataItem(field="display_name", type="string"),
            catalog_pb2.DataItem(
                field="contact.phone",
                type="string",
                sharing_class=catalog_pb2.SHARING_CLASS_CONDITIONAL,
            ),
        ],
        conditions="仅用于联合招商对接",
        update_cycle="实时",
    )


def publish(clients, entry):
    return clients.catalog.PublishCatalogEntry(
        catalog_pb2.PublishCatalogEntryRequest(entry=entry, request_id=new_request_id()),
        timeout=10,
    ).entry


def test_what_changxing_shares_is_one_list_call_away_at_guangde(federation):
    changxing = federation.clients("changxing")
    guangde = federation.clients("guangde")
    code = f"CX-{uuid.uuid4().hex[:8]}"
    published = publish(changxing, phones_entry(code))
    assert published.name.startswith("parties/changxing/catalogEntries/")
    assert published.provider == "changxing"

    def listed():
        page = guangde.catalog.ListCatalogEntries(
            catalog_pb2.ListCatalogEntriesRequest(provider="changxing"), timeout=10
        )
        return [e for e in page.entries if e.resource_code == code]

    [entry] = eventually("changxing's entry at guangde", listed)
    assert entry == published
    classes = {i.field: i.sharing_class for i in entry.items}
    assert classes["contact.phone"] == catalog_pb2.SHARING_CLASS_CONDITIONAL
    assert entry.conditions == "仅用于联合招商对接"


def test_a_bad_entry_is_refused_field_by_field(federation):
    changxing = federation.clients("changxing")
    bad = phones_entry("has space")
    bad.sharing_class = catalog_pb2.SHARING_CLASS_NOT_SHARED
    error = failure(
        changxing.catalog.PublishCatalogEntry,
        catalog_pb2.PublishCatalogEntryRequest(entry=bad, request_id=new_request_id()),
        timeout=10,
    )
    assert error.code == grpc.StatusCode.INVALID_ARGUMENT
    assert error.fields == ["entry.resource_code", "entry.legal_basis"]


def test_only_the_provider_changes_its_entry(federation):
    changxing = federation.clients("changxing")
    guangde = federation.clients("guangde")
    published = publish(changxing, phones_entry(f"CX-{uuid.uuid4().hex[:8]}"))
    replica = eventually(
        "the entry at guangde",
        lambda: _get(guangde, published.name),
    )
    replica.conditions = "guangde would like other terms"
    error = failure(
        guangde.catalog.UpdateCatalogEntry,
        catalog_pb2.UpdateCatalogEntryRequest(
            entry=replica,
            update_mask=field_mask_pb2.FieldMask(paths=["conditions"]),
            request_id=new_request_id(),
        ),
        timeout=10,
    )
    assert error.code == grpc.StatusCode.PERMISSION_DENIED
    assert error.reason == "NOT_OWNER"


def _get(clients, name):
    try:
        return clients.catalog.GetCatalogEntry(
            catalog_pb2.GetCatalogEntryRequest(name=name), timeout=5
        ).entry
    except grpc.RpcError as error:
        if error.code() == grpc.StatusCode.NOT_FOUND:
            return None
        raise
