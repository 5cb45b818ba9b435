"""The HTTP/JSON surface, called as a county system without gRPC calls it: Python `requests`
over HTTPS/1.1 with the system's client certificate, JSON built and read by protobuf's own
proto3 JSON mapping (`google.protobuf.json_format`), against the `yrd-gateway dev` federation.
"""

import json
import pathlib
import time

import pytest
import requests
from google.protobuf import json_format

from support import PARTIES, create, create_request, new_request_id
from yrd.exchange.v1 import project_pb2, watch_pb2

ROOT = pathlib.Path(__file__).resolve().parents[2]


class Http:
    """A party system's HTTPS session with one gateway."""

    def __init__(self, federation, gateway: str, party: str | None = None, stem: str = "client"):
        party = party or gateway
        certs = federation.certs
        self.base = f"https://localhost:{federation.grpc_base + PARTIES.index(gateway)}"
        self.session = requests.Session()
        self.cert = (str(certs / party / f"{stem}.crt"), str(certs / party / f"{stem}.key"))
        # Per request: a session's `verify` loses to REQUESTS_CA_BUNDLE in the environment.
        self.ca = str(certs / "ca.crt")

    def call(self, method: str, path: str, body=None, **kwargs) -> requests.Response:
        return self.session.request(
            method, self.base + path, json=body, timeout=10, cert=self.cert, verify=self.ca, **kwargs
        )


def as_json(message) -> dict:
    return json_format.MessageToDict(message)


def error_fields(body: dict) -> list[str]:
    return [
        v["field"]
        for d in body.get("details", [])
        if d["@type"] == "type.googleapis.com/google.rpc.BadRequest"
        for v in d["fieldViolations"]
    ]


def error_reason(body: dict) -> str:
    for d in body.get("details", []):
        if d["@type"] == "type.googleapis.com/google.rpc.ErrorInfo":
            return d["reason"]
    return ""


@pytest.fixture
def http_zone(federation):
    return Http(federation, "zone")


def test_create_get_update_with_etag_and_withheld_fields(federation, http_zone):
    request = create_request("HTTP/JSON 项目")
    created = http_zone.call("POST", "/v1/projects", as_json(request))
    assert created.status_code == 200, created.text
    assert created.headers["content-type"] == "application/json"
    # protobuf's own JSON parser reads the answer: it is canonical proto3 JSON.
    project = json_format.ParseDict(created.json(), project_pb2.CreateProjectResponse()).project
    assert project.name.startswith("parties/zone/projects/")
    assert project.contact.phone == "+86 138-0000-0000"
    again = http_zone.call("POST", "/v1/projects", as_json(request))
    assert again.json()["project"]["name"] == project.name, "idempotent on requestId"

    # Guangde (Anhui) reads its copy over HTTP: the contact phone is withheld across the border.
    guangde = Http(federation, "guangde")
    deadline = time.monotonic() + 20
    while True:
        copy = guangde.call("GET", f"/v1/{project.name}")
        if copy.status_code == 200 or time.monotonic() > deadline:
            break
        time.sleep(0.2)
    assert copy.status_code == 200, copy.text
    contact = copy.json()["project"]["contact"]
    assert contact["name"] == "张三" and "phone" not in contact

    update = {
        "project": {"stage": "STAGE_NEGOTIATING", "etag": '"0-stale"'},
        "updateMask": "stage",
        "requestId": new_request_id(),
    }
    stale = http_zone.call("PATCH", f"/v1/{project.name}", update)
    assert stale.status_code == 400
    assert stale.json()["code"] == 9 and error_reason(stale.json()) == "STALE_ETAG"
    update["project"]["etag"] = project.etag
    updated = http_zone.call("PATCH", f"/v1/{project.name}", update)
    assert updated.status_code == 200, updated.text
    assert updated.json()["project"]["stage"] == "STAGE_NEGOTIATING"
    # gRPC sees the same update.
    zone = federation.clients("zone")
    read = zone.projects.GetProject(project_pb2.GetProjectRequest(name=project.name), timeout=10)
    assert read.project.etag == updated.json()["project"]["etag"]


def test_list_pages_match_grpc(federation, http_zone):
    zone = federation.clients("zone")
    for i in range(3):
        create(zone, f"分页 {i}")
    names, token = [], ""
    while True:
        page = http_zone.call("GET", "/v1/projects", params={"pageSize": 2, "pageToken": token})
        assert page.status_code == 200, page.text
        body = page.json()
        assert len(body.get("projects", [])) <= 2
        names += [p["name"] for p in body.get("projects", [])]
        token = body.get("nextPageToken", "")
        if not token:
            break
    grpc_names, token = [], ""
    while True:
        page = zone.projects.ListProjects(
            project_pb2.ListProjectsRequest(page_size=500, page_token=token), timeout=10
        )
        grpc_names += [p.name for p in page.projects]
        token = page.next_page_token
        if not token:
            break
    assert names == grpc_names and len(names) >= 3


def test_validation_errors_name_their_fields(http_zone):
    request = as_json(create_request("x"))
    request["project"]["displayName"] = ""
    response = http_zone.call("POST", "/v1/projects", request)
    assert response.status_code == 400
    body = response.json()
    assert body["code"] == 3
    assert "project.display_name" in error_fields(body)
    unknown = http_zone.call("POST", "/v1/projects", {"project": {"colour": "red"}})
    assert unknown.status_code == 400 and error_reason(unknown.json()) == "MALFORMED_REQUEST"
    bad_query = http_zone.call("GET", "/v1/projects", params={"pageSize": "many"})
    assert bad_query.status_code == 400 and error_fields(bad_query.json()) == ["pageSize"]


def test_a_refused_identity_gets_the_grpc_refusal(federation):
    # Guangde's system may call only its own party's gateway.
    other = Http(federation, "zone", party="guangde")
    response = other.call("GET", "/v1/projects")
    assert response.status_code == 403
    assert response.json()["code"] == 7
    # Without a client certificate there is no TLS session at all.
    with pytest.raises(requests.exceptions.SSLError):
        requests.get(
            f"https://localhost:{federation.grpc_base}/v1/projects",
            verify=str(federation.certs / "ca.crt"),
            timeout=10,
        )


def test_watch_streams_json_lines_and_resumes(federation, http_zone):
    zone = federation.clients("zone")
    first = create(zone, "watch 1")
    seen = None
    with http_zone.call("GET", "/v1/watch", stream=True) as stream:
        assert stream.headers["content-type"] == "application/x-ndjson"
        for line in stream.iter_lines():
            event = json_format.ParseDict(json.loads(line), watch_pb2.WatchResponse())
            if event.WhichOneof("record") == "project" and event.project.name == first.name:
                seen = event
                break
    assert seen is not None
    second = create(zone, "watch 2")
    with http_zone.call(
        "GET", "/v1/watch", params={"resumeToken": seen.resume_token}, stream=True
    ) as stream:
        for line in stream.iter_lines():
            event = json.loads(line)
            if "project" in event:
                assert event["project"]["name"] == second.name, "resumed after the first"
                break
    # Server-sent events: Last-Event-ID resumes from the token.
    headers = {"Accept": "text/event-stream", "Last-Event-ID": seen.resume_token}
    with http_zone.call("GET", "/v1/watch", headers=headers, stream=True) as stream:
        assert stream.headers["content-type"] == "text/event-stream"
        event_id = None
        # Bytes, decoded line by line: str.splitlines (decode_unicode=True) also splits at
        # Unicode separators, which JSON strings may hold unescaped.
        for raw in stream.iter_lines():
            line = raw.decode()
            if line.startswith("id: "):
                event_id = line[4:]
            elif line.startswith("data: "):
                data = json.loads(line[6:])
                assert data["resumeToken"] == event_id
                if "project" in data:
                    assert data["project"]["name"] == second.name
                    break


def test_the_openapi_document_served_is_the_one_in_the_repository(http_zone):
    served = http_zone.call("GET", "/openapi.json")
    assert served.status_code == 200
    kept = json.loads((ROOT / "docs" / "openapi.json").read_text())
    assert served.json() == kept
    assert kept["paths"]["/v1/parties/{party}/projects/{id}"]["get"]["operationId"] == "GetProject"
