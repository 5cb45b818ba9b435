"""Identity, directory, health and reflection, from an independent gRPC implementation."""

import subprocess

import grpc
from grpc_health.v1 import health_pb2
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc
from grpc_reflection.v1alpha.proto_reflection_descriptor_database import (
    ProtoReflectionDescriptorDatabase,
)
from google.protobuf import descriptor_pool

from support import (
    PARTIES,
    TRUST_DOMAIN,
    Clients,
    binary,
    create_request,
    failure,
)
from yrd.exchange.v1 import common_pb2, directory_pb2

PUBLIC_SERVICES = {
    "yrd.exchange.v1.ProjectService",
    "yrd.exchange.v1.FactorService",
    "yrd.exchange.v1.DirectoryService",
    "yrd.exchange.v1.WatchService",
    "yrd.exchange.v1.AuditService",
    "yrd.exchange.v1.FederationService",
    "grpc.health.v1.Health",
}


def test_who_am_i_reports_the_demo_client_of_each_party(federation):
    for party in PARTIES:
        me = federation.clients(party).directory.WhoAmI(directory_pb2.WhoAmIRequest(), timeout=5)
        assert me.spiffe_id == f"spiffe://{TRUST_DOMAIN}/party/{party}/client/demo"
        assert me.party == party
        assert me.role == common_pb2.ROLE_CLIENT
        assert me.system == "demo"
        assert not me.read_only
        assert me.gateway_party == party


def test_list_parties_gives_the_federation_in_order(zone):
    reply = zone.directory.ListParties(directory_pb2.ListPartiesRequest(), timeout=5)
    assert [p.id for p in reply.parties] == PARTIES
    assert [p.order for p in reply.parties] == list(range(len(PARTIES)))
    guangde = reply.parties[3]
    assert guangde.province == "Anhui"
    assert guangde.display_name


def test_health_is_serving_for_the_gateway_and_each_service(zone):
    for service in ["", "yrd.exchange.v1.ProjectService", "yrd.exchange.v1.FactorService"]:
        reply = zone.health.Check(health_pb2.HealthCheckRequest(service=service), timeout=5)
        assert reply.status == health_pb2.HealthCheckResponse.SERVING, service
    unknown = failure(
        zone.health.Check, health_pb2.HealthCheckRequest(service="no.such.Service"), timeout=5
    )
    assert unknown.code == grpc.StatusCode.NOT_FOUND


def test_reflection_lists_every_service_and_describes_its_methods(zone):
    stub = reflection_pb2_grpc.ServerReflectionStub(zone.channel)
    request = reflection_pb2.ServerReflectionRequest(list_services="")
    (reply,) = list(stub.ServerReflectionInfo(iter([request]), timeout=5))
    listed = {s.name for s in reply.list_services_response.service}
    assert PUBLIC_SERVICES <= listed, PUBLIC_SERVICES - listed

    # A generic client (grpcurl-style) can resolve a method's input type from the server alone.
    pool = descriptor_pool.DescriptorPool(ProtoReflectionDescriptorDatabase(zone.channel))
    service = pool.FindServiceByName("yrd.exchange.v1.ProjectService")
    create = service.methods_by_name["CreateProject"]
    assert create.input_type.full_name == "yrd.exchange.v1.CreateProjectRequest"
    assert "request_id" in create.input_type.fields_by_name
    project = pool.FindMessageTypeByName("yrd.exchange.v1.Project")
    assert project.fields_by_name["investor"].message_type.full_name == "yrd.exchange.v1.Investor"


def _refused(federation, credentials) -> grpc.RpcError:
    """Calls WhoAmI at the zone with `credentials`; the TLS handshake must fail."""
    before = federation.metric("zone", "yrd_tls_handshakes_refused_total")
    channel = federation.channel("zone", credentials)
    directory = Clients(channel).directory
    error = failure(directory.WhoAmI, directory_pb2.WhoAmIRequest(), timeout=5)
    assert error.code == grpc.StatusCode.UNAVAILABLE, (error.code, error.message)
    # The gateway, not the client, refused: its counter of refused handshakes moved.
    after = federation.metric("zone", "yrd_tls_handshakes_refused_total")
    assert after > before, (before, after)
    return error


def test_a_connection_without_a_client_certificate_is_refused(federation):
    ca = (federation.certs / "ca.crt").read_bytes()
    _refused(federation, grpc.ssl_channel_credentials(root_certificates=ca))


def test_a_client_certificate_from_a_foreign_ca_is_refused(federation, tmp_path):
    # A complete PKI of its own, made by the same tool: right shape, wrong authority.
    foreign = tmp_path / "foreign"
    subprocess.run(
        [str(binary()), "certs", "init", "--dir", str(foreign)],
        check=True,
        capture_output=True,
    )
    credentials = grpc.ssl_channel_credentials(
        root_certificates=(federation.certs / "ca.crt").read_bytes(),
        private_key=(foreign / "zone" / "client.key").read_bytes(),
        certificate_chain=(foreign / "zone" / "client.crt").read_bytes(),
    )
    _refused(federation, credentials)


def test_a_gateway_identity_cannot_call_the_client_apis(federation):
    # Guangde's gateway certificate is trusted, but it names a gateway, not a party system.
    clients = federation.clients("zone", "guangde", stem="gateway")
    error = failure(clients.projects.CreateProject, create_request("from a gateway"), timeout=5)
    assert error.code == grpc.StatusCode.PERMISSION_DENIED
    assert error.error_info.domain == "yrd-gateway"
    assert error.reason == "PERMISSION_DENIED"


def test_another_partys_client_cannot_write_at_the_zone(federation):
    clients = federation.clients("zone", "anji")
    error = failure(clients.projects.CreateProject, create_request("anji at the zone"), timeout=5)
    assert error.code == grpc.StatusCode.PERMISSION_DENIED
    assert error.reason == "PERMISSION_DENIED"
