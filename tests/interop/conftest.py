"""Fixtures of the Python interoperability suite.

The stubs are generated from `proto/` with grpcio-tools when this file is imported, so the suite
always tests the contract in the checkout. The `federation` fixture starts the real binary,
`yrd-gateway dev`, on free loopback ports with its development PKI, and stops it with SIGTERM at
the end of the session (the exit status must be 0).
"""

import contextlib
import importlib.resources
import pathlib
import random
import signal
import socket
import subprocess
import sys
import tempfile
import time

import grpc
import pytest
from grpc_tools import protoc

ROOT = pathlib.Path(__file__).resolve().parents[2]
PROTO = ROOT / "proto"
STUBS = pathlib.Path(tempfile.mkdtemp(prefix="yrd-interop-stubs-"))


def _generate_stubs() -> None:
    include = importlib.resources.files("grpc_tools") / "_proto"
    # Only our own package: google/api/*.proto (the google.api.http option the protos import)
    # comes from googleapis-common-protos, whose descriptors must not be registered twice.
    files = sorted(str(p.relative_to(PROTO)) for p in (PROTO / "yrd").rglob("*.proto"))
    args = [
        "grpc_tools.protoc",
        f"-I{PROTO}",
        f"-I{include}",
        f"--python_out={STUBS}",
        f"--grpc_python_out={STUBS}",
        *files,
    ]
    if protoc.main(args) != 0:
        raise RuntimeError(f"grpc_tools.protoc could not compile {PROTO}")
    sys.path.insert(0, str(STUBS))


_generate_stubs()

from support import PARTIES, Federation, binary  # noqa: E402  (needs the stubs on sys.path)

STARTUP = 90.0


def _port_block(count: int) -> int:
    """A base port such that base..base+count are free on 127.0.0.1 right now."""
    for _ in range(200):
        base = random.randrange(20000, 60000 - count)
        sockets = []
        try:
            for i in range(count):
                s = socket.socket()
                sockets.append(s)
                s.bind(("127.0.0.1", base + i))
            return base
        except OSError:
            continue
        finally:
            for s in sockets:
                s.close()
    raise RuntimeError("no block of free loopback ports found")


@contextlib.contextmanager
def running_federation(data: pathlib.Path):
    """`yrd-gateway dev` in `data` on free ports, stopped with SIGTERM afterwards."""
    data.mkdir(parents=True, exist_ok=True)
    log_path = data / "gateways.log"
    # A port taken between the probe and the bind makes `dev` exit; try another block.
    for _attempt in range(3):
        grpc_base, admin_base = _port_block(len(PARTIES)), _port_block(len(PARTIES))
        log = open(log_path, "ab")
        process = subprocess.Popen(
            [
                str(binary()),
                "dev",
                "--data-dir",
                str(data),
                "--grpc-port-base",
                str(grpc_base),
                "--admin-port-base",
                str(admin_base),
            ],
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        fed = Federation(data, grpc_base, admin_base)
        if fed.wait_serving(process, STARTUP):
            break
        process.kill()
        process.wait()
        log.close()
    else:
        tail = log_path.read_text(errors="replace")[-4000:]
        raise RuntimeError(f"`yrd-gateway dev` did not start; its log ends:\n{tail}")
    try:
        yield fed
    finally:
        fed.close()
        process.send_signal(signal.SIGTERM)
        try:
            code = process.wait(timeout=60)
        except subprocess.TimeoutExpired:
            process.kill()
            code = "killed after 60 s"
        log.close()
        if code != 0:
            tail = log_path.read_text(errors="replace")[-4000:]
            raise RuntimeError(f"`yrd-gateway dev` exited with {code} after SIGTERM:\n{tail}")


@pytest.fixture(scope="session")
def federation(tmp_path_factory):
    with running_federation(tmp_path_factory.mktemp("dev")) as fed:
        yield fed


@pytest.fixture
def zone(federation):
    return federation.clients("zone")
