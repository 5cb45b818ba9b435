"""What the interoperability tests share: a running federation's addresses and credentials,
typed clients, a valid sample project, and decoding of the rich error details every county
system has to read (google.rpc.BadRequest, ErrorInfo, RetryInfo)."""

import os
import pathlib
import time
import urllib.request
import uuid

import grpc
from google.rpc import error_details_pb2
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_status import rpc_status

from yrd.exchange.v1 import (
    access_pb2_grpc,
    allocation_pb2_grpc,
    audit_pb2_grpc,
    catalog_pb2_grpc,
    directory_pb2_grpc,
    project_pb2,
    project_pb2_grpc,
    watch_pb2_grpc,
)

# The shipped federation, in party order; `dev` gives party i the ports base + i.
PARTIES = ["zone", "changxing", "anji", "guangde"]
TRUST_DOMAIN = "yrd-huzhou"
CREDIT_CODE = "91330522MA2B3C4D57"
# Replication between gateways is asynchronous; this bounds every wait for it.
REPLICATION_WAIT = 30.0


ROOT = pathlib.Path(__file__).resolve().parents[2]


def binary() -> pathlib.Path:
    """The gateway binary under test: $YRD_GATEWAY_BIN, or the debug build of this checkout."""
    path = pathlib.Path(os.environ.get("YRD_GATEWAY_BIN", ROOT / "target/debug/yrd-gateway"))
    if not path.exists():
        raise RuntimeError(f"{path} does not exist: run `cargo build` or set YRD_GATEWAY_BIN")
    return path


class Clients:
    """One channel to one gateway, with a stub per public service."""

    def __init__(self, channel: grpc.Channel):
        self.channel = channel
        self.projects = project_pb2_grpc.ProjectServiceStub(channel)
        self.factors = allocation_pb2_grpc.FactorServiceStub(channel)
        self.directory = directory_pb2_grpc.DirectoryServiceStub(channel)
        self.watch = watch_pb2_grpc.WatchServiceStub(channel)
        self.audit = audit_pb2_grpc.AuditServiceStub(channel)
        self.catalog = catalog_pb2_grpc.CatalogServiceStub(channel)
        self.access = access_pb2_grpc.AccessServiceStub(channel)
        self.health = health_pb2_grpc.HealthStub(channel)


class Federation:
    """The four gateways `yrd-gateway dev` runs, and its development PKI under `data/certs`."""

    def __init__(self, data: pathlib.Path, grpc_base: int, admin_base: int):
        self.data = data
        self.certs = data / "certs"
        self.grpc_base = grpc_base
        self.admin_base = admin_base
        self._channels = []

    def address(self, gateway: str) -> str:
        return f"127.0.0.1:{self.grpc_base + PARTIES.index(gateway)}"

    def admin_url(self, gateway: str, path: str) -> str:
        return f"http://127.0.0.1:{self.admin_base + PARTIES.index(gateway)}{path}"

    def credentials(self, party: str, stem: str = "client", ca: pathlib.Path | None = None):
        """Channel credentials of `party`'s `stem` certificate (`client` or `gateway`)."""
        return grpc.ssl_channel_credentials(
            root_certificates=(ca or self.certs / "ca.crt").read_bytes(),
            private_key=(self.certs / party / f"{stem}.key").read_bytes(),
            certificate_chain=(self.certs / party / f"{stem}.crt").read_bytes(),
        )

    def channel(self, gateway: str, credentials=None) -> grpc.Channel:
        # The gateway certificate names the party ("zone") and "localhost", not the IP.
        channel = grpc.secure_channel(
            self.address(gateway),
            credentials or self.credentials(gateway),
            options=[("grpc.ssl_target_name_override", gateway)],
        )
        self._channels.append(channel)
        return channel

    def clients(self, gateway: str, party: str | None = None, stem: str = "client") -> Clients:
        """Clients of `gateway` holding `party`'s certificate (default: the gateway's own party)."""
        return Clients(self.channel(gateway, self.credentials(party or gateway, stem)))

    def metric(self, gateway: str, name: str) -> float:
        """The value of an unlabelled metric on `gateway`'s admin /metrics page."""
        with urllib.request.urlopen(self.admin_url(gateway, "/metrics"), timeout=5) as r:
            for line in r.read().decode().splitlines():
                if line.startswith(name + " "):
                    return float(line.split()[1])
        raise KeyError(f"{name} is not on {gateway}'s /metrics")

    def wait_serving(self, process, limit: float) -> bool:
        """True once every gateway answers a health check with SERVING."""
        deadline = time.monotonic() + limit
        pending = list(PARTIES)
        while pending and time.monotonic() < deadline:
            if process.poll() is not None:
                return False
            if not (self.certs / pending[0] / "client.key").exists():
                time.sleep(0.2)  # `dev` has not written its PKI yet
                continue
            try:
                reply = self.clients(pending[0]).health.Check(
                    health_pb2.HealthCheckRequest(service=""), timeout=2
                )
                if reply.status == health_pb2.HealthCheckResponse.SERVING:
                    pending.pop(0)
                    continue
            except grpc.RpcError:
                pass
            time.sleep(0.2)
        return not pending

    def close(self) -> None:
        for channel in self._channels:
            channel.close()


def new_request_id() -> str:
    return str(uuid.uuid4())


def sample_project(display_name: str) -> project_pb2.Project:
    """A complete, valid project as a county's investment-promotion system would send it."""
    return project_pb2.Project(
        display_name=display_name,
        investor=project_pb2.Investor(
            name="浙江某某新能源汽车零部件有限公司", credit_code=CREDIT_CODE
        ),
        industry=project_pb2.INDUSTRY_NEW_ENERGY_VEHICLES,
        industry_code="C3612",
        total_investment_yuan=1_500_000_000,
        land_area_mu="120.5",
        platform="南华山",
        contact=project_pb2.Contact(name="张三", phone="+86 138-0000-0000"),
        service_officer="李四",
        checklist=[
            project_pb2.ChecklistItem(
                item="environmental impact assessment",
                department="湖州市生态环境局",
                due_date="2027-03-31",
            )
        ],
        labels={"batch": "2026-q4"},
    )


def create_request(project: project_pb2.Project | str) -> project_pb2.CreateProjectRequest:
    """A create of `project` (or of the sample project with that display name), new request id."""
    if isinstance(project, str):
        project = sample_project(project)
    return project_pb2.CreateProjectRequest(project=project, request_id=new_request_id())


def create(clients: Clients, display_name: str) -> project_pb2.Project:
    return clients.projects.CreateProject(create_request(display_name), timeout=10).project


class ErrorDetails:
    """The code, message and decoded `google.rpc.Status` details of a failed call."""

    def __init__(self, error: grpc.RpcError):
        self.code = error.code()
        self.message = error.details()
        self.bad_request = None
        self.error_info = None
        self.retry_info = None
        # from_call checks that the details' code and message match the call's status.
        status = rpc_status.from_call(error)
        if status is None:
            return
        for detail in status.details:
            for attr, kind in (
                ("bad_request", error_details_pb2.BadRequest),
                ("error_info", error_details_pb2.ErrorInfo),
                ("retry_info", error_details_pb2.RetryInfo),
            ):
                if detail.Is(kind.DESCRIPTOR):
                    message = kind()
                    detail.Unpack(message)
                    setattr(self, attr, message)

    @property
    def reason(self) -> str:
        return self.error_info.reason if self.error_info else ""

    @property
    def fields(self) -> list[str]:
        if not self.bad_request:
            return []
        return [v.field for v in self.bad_request.field_violations]


def failure(call, *args, **kwargs) -> ErrorDetails:
    """Runs a call that must fail and returns what the client can read about the failure."""
    try:
        call(*args, **kwargs)
    except grpc.RpcError as error:
        return ErrorDetails(error)
    raise AssertionError(f"{call} succeeded but was expected to fail")


def eventually(what: str, check, limit: float = REPLICATION_WAIT):
    """Polls `check` until it returns something truthy; fails naming `what` after `limit` s."""
    deadline = time.monotonic() + limit
    while True:
        value = check()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {limit} s waiting for {what}")
        time.sleep(0.1)
