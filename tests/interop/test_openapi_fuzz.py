"""Property-based testing of the HTTP/JSON surface from its own OpenAPI document: schemathesis
generates requests for every operation (valid and invalid by the schema) against a `dev`
federation of its own (so what it writes does not disturb the other tests), and checks that no
input gets a server error, that every answer has a documented status and content type, that
200 answers and error bodies match their schemas, and that 405 answers list exactly the verbs
the document gives the path. The seed it prints reproduces a failure.
"""

import os
import subprocess
import sys
import pathlib

from conftest import running_federation

ROOT = pathlib.Path(__file__).resolve().parents[2]
CHECKS = ",".join(
    [
        "not_a_server_error",
        "status_code_conformance",
        "content_type_conformance",
        "response_schema_conformance",
        "allow_header_conformance",
        "unsupported_method",
    ]
)


def test_generated_requests_get_no_server_error_and_conforming_answers(tmp_path):
    schemathesis = pathlib.Path(sys.executable).parent / "schemathesis"
    examples = os.environ.get("YRD_SCHEMATHESIS_EXAMPLES", "25")
    with running_federation(tmp_path / "dev") as fed:
        certs = fed.certs
        run = subprocess.run(
            [
                str(schemathesis),
                "run",
                str(ROOT / "docs" / "openapi.json"),
                "--url",
                f"https://localhost:{fed.grpc_base}",
                "--tls-verify",
                str(certs / "ca.crt"),
                "--request-cert",
                str(certs / "zone" / "client.crt"),
                "--request-cert-key",
                str(certs / "zone" / "client.key"),
                "--max-examples",
                examples,
                # Watch never ends by itself; test_http_json.py covers it.
                "--exclude-path",
                "/v1/watch",
                "--checks",
                CHECKS,
                "--no-color",
            ],
            capture_output=True,
            text=True,
            timeout=600,
        )
    summary = run.stdout[-6000:]
    assert run.returncode == 0, f"schemathesis found failures:\n{summary}\n{run.stderr[-2000:]}"
    assert "passed" in summary and "0 passed" not in summary, summary
