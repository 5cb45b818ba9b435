"""Project records from Python: create/get/update/list, update masks, pagination, idempotent
retries, optimistic concurrency, and every error class a county system has to handle."""

import grpc
from google.protobuf import field_mask_pb2

from support import (
    ErrorDetails,
    create,
    create_request,
    failure,
    new_request_id,
    sample_project,
)
from yrd.exchange.v1 import project_pb2

ERROR_DOMAIN = "yrd-gateway"


def list_all(clients, page_size: int, **filters) -> list[project_pb2.Project]:
    """Every project a list returns, walking next_page_token to the end."""
    seen, token = [], ""
    while True:
        page = clients.projects.ListProjects(
            project_pb2.ListProjectsRequest(page_size=page_size, page_token=token, **filters),
            timeout=10,
        )
        assert len(page.projects) <= page_size
        seen.extend(page.projects)
        token = page.next_page_token
        if not token:
            return seen


def test_create_then_get_returns_the_same_record(zone):
    created = create(zone, "interop create and get")
    assert created.name.startswith("parties/zone/projects/")
    assert created.owner == "zone"
    assert created.etag
    assert created.stage == project_pb2.STAGE_LEAD
    assert created.create_time.seconds > 0
    got = zone.projects.GetProject(project_pb2.GetProjectRequest(name=created.name), timeout=5)
    assert got.project == created
    # Chinese text and nested messages survive the round trip byte for byte.
    assert got.project.investor.name == "浙江某某新能源汽车零部件有限公司"
    assert got.project.checklist[0].department == "湖州市生态环境局"
    assert dict(got.project.labels) == {"batch": "2026-q4"}


def test_an_update_changes_only_the_masked_fields(zone):
    created = create(zone, "interop before update")
    change = project_pb2.Project(
        name=created.name,
        etag=created.etag,
        display_name="interop after update",
        stage=project_pb2.STAGE_NEGOTIATING,
        # Not in the mask: must be ignored.
        platform="ignored",
        total_investment_yuan=1,
    )
    request = project_pb2.UpdateProjectRequest(
        project=change,
        update_mask=field_mask_pb2.FieldMask(paths=["display_name", "stage"]),
        request_id=new_request_id(),
    )
    updated = zone.projects.UpdateProject(request, timeout=5).project
    assert updated.display_name == "interop after update"
    assert updated.stage == project_pb2.STAGE_NEGOTIATING
    assert updated.platform == created.platform
    assert updated.total_investment_yuan == created.total_investment_yuan
    assert updated.etag != created.etag
    # The same request again (a retry after a lost answer) gives the same answer.
    again = zone.projects.UpdateProject(request, timeout=5).project
    assert again == updated


def test_pagination_walks_every_project_exactly_once(zone):
    mine = {create(zone, f"interop page {i}").name for i in range(7)}
    listed = [p.name for p in list_all(zone, page_size=3, owner="zone")]
    assert len(listed) == len(set(listed)), "a project was listed twice"
    assert mine <= set(listed)
    assert all(name.startswith("parties/zone/") for name in listed)


def test_typed_filters_select_matching_projects(zone):
    created = create(zone, "interop filter")
    leads = list_all(zone, page_size=50, owner="zone", stage=project_pb2.STAGE_LEAD)
    assert created.name in {p.name for p in leads}
    assert all(p.stage == project_pb2.STAGE_LEAD for p in leads)
    producing = list_all(zone, page_size=50, owner="zone", stage=project_pb2.STAGE_PRODUCING)
    assert created.name not in {p.name for p in producing}


def test_a_retried_create_returns_the_first_result_and_writes_once(zone):
    request = create_request("interop retried")
    first = zone.projects.CreateProject(request, timeout=5).project
    second = zone.projects.CreateProject(request, timeout=5).project
    assert second == first
    same_name = [p for p in list_all(zone, 100, owner="zone") if p.display_name == "interop retried"]
    assert len(same_name) == 1

    # The same request id with a different body is a client bug, and says so.
    reused = project_pb2.CreateProjectRequest(
        project=sample_project("interop something else"), request_id=request.request_id
    )
    error = failure(zone.projects.CreateProject, reused, timeout=5)
    assert error.code == grpc.StatusCode.INVALID_ARGUMENT
    assert error.reason == "REQUEST_ID_REUSED"
    assert error.fields == ["request_id"]


def test_a_stale_etag_is_refused_and_changes_nothing(zone):
    created = create(zone, "interop etag")

    def rename(etag: str, to: str):
        return zone.projects.UpdateProject(
            project_pb2.UpdateProjectRequest(
                project=project_pb2.Project(name=created.name, etag=etag, display_name=to),
                update_mask=field_mask_pb2.FieldMask(paths=["display_name"]),
                request_id=new_request_id(),
            ),
            timeout=5,
        )

    rename(created.etag, "interop etag, first writer")
    error = failure(rename, created.etag, "interop etag, second writer")
    assert error.code == grpc.StatusCode.FAILED_PRECONDITION
    assert error.reason == "STALE_ETAG"
    now = zone.projects.GetProject(project_pb2.GetProjectRequest(name=created.name), timeout=5)
    assert now.project.display_name == "interop etag, first writer"


def test_every_bad_field_is_named_in_a_bad_request(zone):
    project = sample_project("   ")
    project.investor.credit_code = "91330522MA2B3C4D58"  # wrong check character
    project.total_investment_yuan = -1
    project.land_area_mu = "1.2e2"
    project.industry = 99  # not a defined Industry
    project.checklist[0].due_date = "2027-02-30"
    project.contact.phone = "call me"
    before = len(list_all(zone, 100, owner="zone"))
    error = failure(zone.projects.CreateProject, create_request(project), timeout=5)
    assert error.code == grpc.StatusCode.INVALID_ARGUMENT
    assert sorted(error.fields) == sorted(
        [
            "project.display_name",
            "project.investor.credit_code",
            "project.total_investment_yuan",
            "project.land_area_mu",
            "project.industry",
            "project.checklist[0].due_date",
            "project.contact.phone",
        ]
    )
    assert all(v.description for v in error.bad_request.field_violations)
    assert error.reason == "INVALID_ARGUMENT"
    assert len(list_all(zone, 100, owner="zone")) == before, "a refused create wrote something"


def set_stage(clients, project: project_pb2.Project, stage: int) -> project_pb2.Project:
    request = project_pb2.UpdateProjectRequest(
        project=project_pb2.Project(name=project.name, etag=project.etag, stage=stage),
        update_mask=field_mask_pb2.FieldMask(paths=["stage"]),
        request_id=new_request_id(),
    )
    return clients.projects.UpdateProject(request, timeout=5).project


def test_a_backwards_stage_move_is_refused_and_changes_nothing(zone):
    created = create(zone, "interop stages")
    signed = set_stage(zone, created, project_pb2.STAGE_SIGNED)
    error = failure(set_stage, zone, signed, project_pb2.STAGE_LEAD)
    assert error.code == grpc.StatusCode.INVALID_ARGUMENT
    assert error.fields == ["project.stage"]
    now = zone.projects.GetProject(project_pb2.GetProjectRequest(name=created.name), timeout=5)
    assert now.project.stage == project_pb2.STAGE_SIGNED


def test_missing_and_malformed_names(zone):
    missing = failure(
        zone.projects.GetProject,
        project_pb2.GetProjectRequest(name="parties/zone/projects/0190aaaa-0000-7000-8000-000000000000"),
        timeout=5,
    )
    assert missing.code == grpc.StatusCode.NOT_FOUND
    assert missing.reason == "NOT_FOUND"
    malformed = failure(
        zone.projects.GetProject, project_pb2.GetProjectRequest(name="projects/42"), timeout=5
    )
    assert malformed.code == grpc.StatusCode.INVALID_ARGUMENT
    assert malformed.fields == ["name"]


def test_an_oversized_message_is_resource_exhausted_and_writes_nothing(zone):
    project = sample_project("interop oversized")
    project.labels["blob"] = "x" * (5 * 1024 * 1024)  # over the default 4 MiB limit
    error = failure(zone.projects.CreateProject, create_request(project), timeout=10)
    assert error.code == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert error.reason == "MESSAGE_TOO_LARGE"
    listed = list_all(zone, 100, owner="zone")
    assert "interop oversized" not in {p.display_name for p in listed}


def test_error_info_names_the_gateway_domain(zone):
    error = failure(
        zone.projects.GetProject, project_pb2.GetProjectRequest(name="nonsense"), timeout=5
    )
    assert isinstance(error, ErrorDetails)
    assert error.error_info is not None
    assert error.error_info.domain == ERROR_DOMAIN
    assert error.message
