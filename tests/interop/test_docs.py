"""The Python example of docs/developer.md, run as written against the `dev` federation.

Only the certificate folder and the zone's address are replaced (the suite's `dev` runs in a
temporary folder on free ports); everything else is the example's own code.
"""

import contextlib
import io
import pathlib
import re

ROOT = pathlib.Path(__file__).resolve().parents[2]


def python_example() -> str:
    text = (ROOT / "docs" / "developer.md").read_text()
    blocks = re.findall(r"```python\n(.*?)```", text, flags=re.S)
    assert len(blocks) == 1, f"expected one Python example in docs/developer.md, found {len(blocks)}"
    return blocks[0]


def test_the_developer_guide_python_example_creates_a_project(federation):
    code = python_example()
    assert 'certs = "data/dev/certs"' in code and '"127.0.0.1:50051"' in code, code
    code = code.replace('certs = "data/dev/certs"', f'certs = "{federation.certs}"')
    code = code.replace('"127.0.0.1:50051"', f'"{federation.address("zone")}"')
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        exec(compile(code, "docs/developer.md", "exec"), {})
    printed = out.getvalue()
    assert re.match(r"parties/zone/projects/[0-9a-f-]{36} \S+", printed), printed
