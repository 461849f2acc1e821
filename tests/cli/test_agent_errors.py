"""`labfleet agent`: errors name the URL and the cause, and the token comes from the env or a file."""

from __future__ import annotations

import asyncio
import os
import sys
from pathlib import Path

import httpx
import pytest

from fleet.cli.agent import read_token
from fleet.runtime.agent_errors import describe
from fleet.runtime.brokers import free_port
from fleet.runtime.edge_agent import AgentError

API = "http://fleet.school.test:8000"


async def _status_error(status: int) -> httpx.HTTPStatusError:
    transport = httpx.MockTransport(lambda request: httpx.Response(status, json={"detail": "x"}))
    async with httpx.AsyncClient(transport=transport, base_url=API) as http:
        r = await http.get("/api/v1/schools")
    with pytest.raises(httpx.HTTPStatusError) as caught:
        r.raise_for_status()
    return caught.value


async def test_a_refused_token_names_the_url_and_where_the_token_comes_from() -> None:
    text = describe(await _status_error(401), API)
    assert text.startswith(f"the fleet service at {API}/api/v1/schools refused the token (401)")
    assert "LABFLEET_AGENT_TOKEN" in text and "Client error" not in text  # not httpx's raw text


async def test_forbidden_not_found_and_other_statuses_name_the_url() -> None:
    assert "(403)" in describe(await _status_error(403), API)
    assert describe(await _status_error(404), API) == (
        f"{API}/api/v1/schools answered 404: is --api the fleet service's base URL?"
    )
    assert (
        describe(await _status_error(502), API) == f"the fleet service at {API}/api/v1/schools answered 502"
    )


def test_the_token_comes_from_the_env_first_then_the_first_line_of_the_file(tmp_path: Path) -> None:
    token_file = tmp_path / "agent.token"
    token_file.write_text("lf_tok_abc\nsecond line ignored\n")
    assert read_token("lf_tok_env\n", str(token_file)) == "lf_tok_env"
    assert read_token("", str(token_file)) == "lf_tok_abc"
    with pytest.raises(AgentError, match="no API token"):
        read_token("", "")
    with pytest.raises(AgentError, match=f"cannot read the token file {tmp_path}/missing"):
        read_token("", str(tmp_path / "missing"))
    (tmp_path / "empty").write_text("\n")
    with pytest.raises(AgentError, match="is empty"):
        read_token("", str(tmp_path / "empty"))


async def test_the_agent_that_cannot_reach_the_service_says_where_and_why(tmp_path: Path) -> None:
    api = f"http://127.0.0.1:{free_port()}"  # nothing listens there
    token_file = tmp_path / "agent.token"
    token_file.write_text("lf_tok_whatever\n")
    env = {k: v for k, v in os.environ.items() if not k.startswith("LABFLEET_AGENT_")}
    env["LABFLEET_AGENT_TOKEN_FILE"] = str(token_file)
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "fleet.cli.main", "agent", "--school", "S-001", "--api", api,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE, env=env,
    )  # fmt: skip
    out, err = await asyncio.wait_for(proc.communicate(), 60)
    text = err.decode()
    assert proc.returncode == 1, (out, err)
    assert f"Error: cannot reach the fleet service at {api}/api/v1/schools" in text
    assert "All connection attempts failed" not in text
