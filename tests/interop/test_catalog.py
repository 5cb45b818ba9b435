"""The resource catalog and access requests from Python: a county system publishes its party's
entry, another party's system finds it with one List call naming the provider, bad entries are
refused field by field, only the provider may change an entry; a request for a conditional item
is approved by the provider and the approval reaches the requester, a NOT_SHARED item is refused
at once with its legal basis."""

import uuid

import grpc
import pytest
from google.protobuf import field_mask_pb2

from support import eventually, failure, new_request_id
from yrd.exchange.v1 import access_pb2, catalog_pb2, common_pb2


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


def test_a_conditional_item_is_requested_approved_and_the_answer_comes_back(federation):
    changxing = federation.clients("changxing")
    guangde = federation.clients("guangde")
    entry = publish(changxing, phones_entry(f"CX-{uuid.uuid4().hex[:8]}"))
    eventually("the entry at guangde", lambda: _get(guangde, entry.name))
    filed = guangde.access.CreateAccessRequest(
        access_pb2.CreateAccessRequestRequest(
            access_request=access_pb2.AccessRequest(
                entry=entry.name,
                items=["contact.phone"],
                purpose="联合招商对接",
                validity_days=30,
            ),
            request_id=new_request_id(),
        ),
        timeout=10,
    ).access_request
    assert filed.state == access_pb2.ACCESS_REQUEST_STATE_REQUESTED
    assert filed.provider == "changxing"

    def at(clients, state):
        try:
            r = clients.access.GetAccessRequest(
                access_pb2.GetAccessRequestRequest(name=filed.name), timeout=5
            ).access_request
        except grpc.RpcError as error:
            if error.code() == grpc.StatusCode.NOT_FOUND:
                return None
            raise
        return r if r.state == state else None

    eventually("the request at changxing", lambda: at(changxing, access_pb2.ACCESS_REQUEST_STATE_REQUESTED))
    changxing.access.AnswerAccessRequest(
        access_pb2.AnswerAccessRequestRequest(
            name=filed.name, approve=True, reason="同意", request_id=new_request_id()
        ),
        timeout=10,
    )
    approved = eventually(
        "the approval at guangde", lambda: at(guangde, access_pb2.ACCESS_REQUEST_STATE_APPROVED)
    )
    assert list(approved.granted_items) == ["contact.phone"]

    # The provider revokes; Guangde's gateway erases what it held and its deletion receipt,
    # signed by its gateway as every change is, comes back to Changxing.
    revoked = changxing.access.RevokeAccessGrant(
        access_pb2.RevokeAccessGrantRequest(
            name=filed.name, reason="项目对接已结束", request_id=new_request_id()
        ),
        timeout=10,
    ).access_request
    assert revoked.state == access_pb2.ACCESS_REQUEST_STATE_REVOKED
    assert revoked.revoke_reason == "项目对接已结束"

    def with_receipt(clients):
        r = at(clients, access_pb2.ACCESS_REQUEST_STATE_REVOKED)
        return r if r is not None and r.HasField("deletion_receipt") else None

    receipt = eventually("the deletion receipt at changxing", lambda: with_receipt(changxing))
    assert receipt.deletion_receipt.cause == "revoked"
    assert list(receipt.deletion_receipt.items) == ["contact.phone"]
    with pytest.raises(grpc.RpcError) as refused:
        guangde.access.RevokeAccessGrant(
            access_pb2.RevokeAccessGrantRequest(
                name=filed.name, reason="not mine", request_id=new_request_id()
            ),
            timeout=10,
        )
    assert refused.value.code() == grpc.StatusCode.PERMISSION_DENIED


def test_a_not_shared_item_is_refused_at_once_with_its_legal_basis(federation):
    changxing = federation.clients("changxing")
    guangde = federation.clients("guangde")
    secret = phones_entry(f"CX-{uuid.uuid4().hex[:8]}")
    secret.items.append(
        catalog_pb2.DataItem(
            field="investor.credit_code",
            sharing_class=catalog_pb2.SHARING_CLASS_NOT_SHARED,
            legal_basis="《个人信息保护法》第十三条",
        )
    )
    entry = publish(changxing, secret)
    eventually("the entry at guangde", lambda: _get(guangde, entry.name))
    error = failure(
        guangde.access.CreateAccessRequest,
        access_pb2.CreateAccessRequestRequest(
            access_request=access_pb2.AccessRequest(
                entry=entry.name,
                items=["investor.credit_code"],
                purpose="联合招商对接",
                validity_days=30,
            ),
            request_id=new_request_id(),
        ),
        timeout=10,
    )
    assert error.code == grpc.StatusCode.FAILED_PRECONDITION
    assert error.reason == "NOT_SHARED"
    assert "个人信息保护法" in error.message
