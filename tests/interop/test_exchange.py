"""Cross-party behaviour from Python: Watch across a reconnect, allocation negotiation between
two parties, project referral, and the audit trail of the calls made."""

import time

import grpc
from google.protobuf import timestamp_pb2

from support import create, eventually, failure, new_request_id
from yrd.exchange.v1 import allocation_pb2, audit_pb2, project_pb2, watch_pb2

# A Watch that has nothing to deliver waits; this bounds how long a test reads one.
WATCH_DEADLINE = 30


def next_zone_project(stream, names: set[str]) -> tuple[str, str]:
    """Reads `stream` until a change of one of `names`; returns (name, resume token)."""
    for event in stream:
        if event.WhichOneof("record") == "project" and event.project.name in names:
            assert event.owner == "zone"
            assert event.seq > 0
            return event.project.name, event.resume_token
    raise AssertionError("the Watch stream ended")


def test_watch_resumes_after_a_reconnect_and_misses_nothing(federation):
    first = federation.clients("zone")
    stream = first.watch.Watch(watch_pb2.WatchRequest(), timeout=WATCH_DEADLINE)
    p1 = create(first, "interop watch 1")
    name, token = next_zone_project(stream, {p1.name})
    assert name == p1.name and token
    # The client goes away: stream cancelled, channel closed.
    stream.cancel()
    first.channel.close()

    # Meanwhile the zone's systems keep writing.
    writer = federation.clients("zone")
    p2 = create(writer, "interop watch 2")
    p3 = create(writer, "interop watch 3")

    # A new connection resumes from the token: p2 and p3 in order, p1 not again.
    second = federation.clients("zone")
    resumed = second.watch.Watch(
        watch_pb2.WatchRequest(resume_token=token), timeout=WATCH_DEADLINE
    )
    wanted = {p1.name, p2.name, p3.name}
    got = [next_zone_project(resumed, wanted)[0], next_zone_project(resumed, wanted)[0]]
    resumed.cancel()
    assert got == [p2.name, p3.name]


def test_watch_refuses_a_malformed_resume_token(zone):
    stream = zone.watch.Watch(watch_pb2.WatchRequest(resume_token="not a token"), timeout=5)
    error = failure(next, stream)
    assert error.code == grpc.StatusCode.INVALID_ARGUMENT
    assert error.fields == ["resume_token"]


def _allocation_at(federation, party, name, status, round_, decisions):
    factors = federation.clients(party).factors

    def check():
        try:
            a = factors.GetAllocation(allocation_pb2.GetAllocationRequest(name=name), timeout=5)
        except grpc.RpcError:
            return None
        a = a.allocation
        if a.status == status and a.round == round_ and len(a.decisions) == decisions:
            return a
        return None

    return eventually(f"{name} status {status} round {round_} at {party}", check)


def _decide(federation, party, name, round_, verdict, **extra):
    return federation.clients(party).factors.DecideAllocation(
        allocation_pb2.DecideAllocationRequest(
            allocation=name,
            round=round_,
            verdict=verdict,
            request_id=new_request_id(),
            **extra,
        ),
        timeout=10,
    )


def test_an_allocation_is_negotiated_between_the_zone_and_guangde(federation):
    valid_until = timestamp_pb2.Timestamp()
    valid_until.FromSeconds(int(time.time()) + 30 * 86400)
    proposal = allocation_pb2.Allocation(
        kind=allocation_pb2.FACTOR_KIND_LAND_QUOTA,
        quantity="200",
        from_party="guangde",
        to_party="zone",
        benefit_shares=[
            allocation_pb2.BenefitShare(party="zone", basis_points=6000),
            allocation_pb2.BenefitShare(party="guangde", basis_points=4000),
        ],
        valid_until=valid_until,
        description="land quota for a new-energy-vehicle project (interop)",
    )
    zone = federation.clients("zone").factors
    proposed = zone.ProposeAllocation(
        allocation_pb2.ProposeAllocationRequest(allocation=proposal, request_id=new_request_id()),
        timeout=10,
    ).allocation
    name = proposed.name
    assert proposed.status == allocation_pb2.ALLOCATION_STATUS_PROPOSED
    assert list(proposed.required_parties) == ["zone", "guangde"]

    # Guangde counters with 150 mu once the proposal has reached it.
    _allocation_at(federation, "guangde", name, allocation_pb2.ALLOCATION_STATUS_PROPOSED, 1, 0)
    countered = _decide(
        federation,
        "guangde",
        name,
        1,
        allocation_pb2.VERDICT_COUNTER,
        counter_quantity="150",
        comment="150 mu is what our quota allows this year",
    ).allocation
    assert countered.round == 2
    assert countered.current_quantity == "150"

    # A decision on the old round is refused and changes nothing.
    stale = failure(_decide, federation, "guangde", name, 1, allocation_pb2.VERDICT_APPROVE)
    assert stale.code == grpc.StatusCode.FAILED_PRECONDITION
    assert stale.reason

    _allocation_at(federation, "zone", name, allocation_pb2.ALLOCATION_STATUS_PROPOSED, 2, 1)
    _decide(federation, "zone", name, 2, allocation_pb2.VERDICT_APPROVE)
    _allocation_at(federation, "guangde", name, allocation_pb2.ALLOCATION_STATUS_PROPOSED, 2, 2)
    agreed = _decide(federation, "guangde", name, 2, allocation_pb2.VERDICT_APPROVE).allocation
    assert agreed.status == allocation_pb2.ALLOCATION_STATUS_AGREED

    at_zone = _allocation_at(
        federation, "zone", name, allocation_pb2.ALLOCATION_STATUS_AGREED, 2, 3
    )
    assert at_zone.current_quantity == "150"
    assert {d.party for d in at_zone.decisions} == {"zone", "guangde"}


def _referral_at(federation, party, name, state):
    projects = federation.clients(party).projects

    def check():
        reply = projects.ListReferrals(project_pb2.ListReferralsRequest(page_size=100), timeout=5)
        return next((r for r in reply.referrals if r.name == name and r.state == state), None)

    return eventually(f"referral {name} in state {state} at {party}", check)


def _project_at(federation, party, name, stage=None):
    projects = federation.clients(party).projects

    def check():
        try:
            p = projects.GetProject(project_pb2.GetProjectRequest(name=name), timeout=5).project
        except grpc.RpcError:
            return None
        return p if stage is None or p.stage == stage else None

    return eventually(f"{name} at {party}", check)


def test_a_project_referred_to_changxing_is_accepted_there(federation):
    original = create(federation.clients("zone"), "interop referral")
    referral = federation.clients("zone").projects.ReferProject(
        project_pb2.ReferProjectRequest(
            project=original.name,
            to_party="changxing",
            reason="the investor's CNC line fits Changxing's industry map",
            request_id=new_request_id(),
        ),
        timeout=10,
    ).referral
    assert referral.state == project_pb2.REFERRAL_STATE_PENDING
    assert (referral.from_party, referral.to_party) == ("zone", "changxing")

    _referral_at(federation, "changxing", referral.name, project_pb2.REFERRAL_STATE_PENDING)
    changxing = federation.clients("changxing").projects
    accepted = changxing.RespondToReferral(
        project_pb2.RespondToReferralRequest(
            referral=referral.name, accept=True, comment="welcome", request_id=new_request_id()
        ),
        timeout=10,
    ).referral
    assert accepted.state == project_pb2.REFERRAL_STATE_ACCEPTED
    assert accepted.accepted_project.startswith("parties/changxing/projects/")

    # Answering twice is refused with a reason a client can branch on.
    twice = failure(
        changxing.RespondToReferral,
        project_pb2.RespondToReferralRequest(
            referral=referral.name, accept=False, request_id=new_request_id()
        ),
        timeout=10,
    )
    assert (twice.code, twice.reason) == (grpc.StatusCode.ALREADY_EXISTS, "ALREADY_ANSWERED")

    new = _project_at(federation, "changxing", accepted.accepted_project)
    assert new.owner == "changxing"
    assert new.referred_from == original.name
    _project_at(federation, "zone", original.name, stage=project_pb2.STAGE_REFERRED)
    _referral_at(federation, "zone", referral.name, project_pb2.REFERRAL_STATE_ACCEPTED)


def test_the_audit_trail_lists_this_clients_calls_as_a_chain(federation):
    zone = federation.clients("zone")
    created = create(zone, "interop audited")

    def find():
        reply = zone.audit.ListAuditEvents(
            audit_pb2.ListAuditEventsRequest(page_size=1000), timeout=10
        )
        return [e for e in reply.events if created.name in e.records] or None

    (event,) = eventually("the audit event of the create", find, limit=10)
    assert event.method.endswith("CreateProject")
    assert event.code == "OK"
    assert event.caller == "spiffe://yrd-huzhou/party/zone/client/demo"
    assert len(event.hash) == 32 and len(event.prev_hash) == 32
