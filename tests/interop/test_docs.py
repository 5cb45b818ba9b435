"""The Python and curl examples of docs/developer.md, run as written against the `dev` federation.

Only the certificate folder and the zone's address are replaced (the suite's `dev` runs in a
temporary folder on free ports); everything else is the example's own code.
"""

import contextlib
import io
import pathlib
import re

ROOT = pathlib.Path(__file__).resolve().parents[2]


def example(lang: str) -> str:
    """The one fenced `lang` block of docs/developer.md."""
    text = (ROOT / "docs" / "developer.md").read_text()
    blocks = re.findall(rf"```{lang}\n(.*?)```", text, flags=re.S)
    assert len(blocks) == 1, f"expected one {lang} example in docs/developer.md, found {len(blocks)}"
    return blocks[0]


def test_the_developer_guide_python_example_creates_a_project(federation):
    code = example("python")
    assert 'certs = "data/dev/certs"' in code and '"127.0.0.1:50051"' in code, code
    code = code.replace('certs = "data/dev/certs"', f'certs = "{federation.certs}"')
    code = code.replace('"127.0.0.1:50051"', f'"{federation.address("zone")}"')
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        exec(compile(code, "docs/developer.md", "exec"), {})
    printed = out.getvalue()
    assert re.match(r"parties/zone/projects/[0-9a-f-]{36} \S+", printed), printed


def test_the_developer_guide_curl_example_calls_the_http_json_surface(federation):
    import json
    import subprocess

    code = example("sh")
    assert "certs=data/dev/certs" in code and "gw=https://localhost:50051" in code, code
    code = code.replace("certs=data/dev/certs", f"certs={federation.certs}")
    code = code.replace("gw=https://localhost:50051", f"gw=https://localhost:{federation.grpc_base}")
    out = subprocess.run(
        ["bash", "-euo", "pipefail", "-c", code], capture_output=True, text=True, timeout=60
    )
    assert out.returncode == 0, out.stderr
    # Three JSON answers, one after the other.
    decoder, text, answers = json.JSONDecoder(), out.stdout.strip(), []
    while text:
        value, end = decoder.raw_decode(text)
        answers.append(value)
        text = text[end:].lstrip()
    assert [list(a)[0] for a in answers] == ["spiffeId", "project", "projects"], answers
    assert answers[1]["project"]["name"].startswith("parties/zone/projects/")
    assert answers[1]["project"]["name"] in [p["name"] for p in answers[2]["projects"]]
