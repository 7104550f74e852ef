"""An MCP client (the official Python SDK, `mcp` 2.x) driving a server through Writ: through
`writ mcp` over stdio (host/cli/tests/mcp.rs), the whole `writ mcp ... -- server` line being the
JSON list in $MCP_COMMAND; or through the gateway's Streamable HTTP endpoint
(tests/tests/mcp_http.rs), at $MCP_URL with the agent key $MCP_KEY as its bearer token. The
scenario is argv[1]. Prints one JSON object: what it saw."""

import asyncio
import json
import os
import sys

import httpx2
from mcp import ClientSession, StdioServerParameters, stdio_client
from mcp.client.streamable_http import streamable_http_client


def text_of(result) -> str:
    return "".join(getattr(c, "text", "") for c in result.content)


async def main(scenario: str, args: list[str]) -> dict:
    out: dict = {}
    try:
        if "MCP_URL" in os.environ:
            headers = {"Authorization": f"Bearer {os.environ['MCP_KEY']}"}
            async with httpx2.AsyncClient(headers=headers, timeout=60) as http:
                async with streamable_http_client(os.environ["MCP_URL"], http_client=http) as (read, write):
                    await run(scenario, args, read, write, out)
        else:
            command = json.loads(os.environ["MCP_COMMAND"])
            params = StdioServerParameters(command=command[0], args=command[1:], env=dict(os.environ))
            async with stdio_client(params) as (read, write):
                await run(scenario, args, read, write, out)
    except BaseException as e:  # the session's own end (a server that died) is reported too
        out["session_error"] = f"{type(e).__name__}: {e}"
    return out


async def run(scenario: str, args: list[str], read, write, out: dict) -> None:
    async with ClientSession(read, write) as session:
        init = await session.initialize()
        out["server"] = init.server_info.name
        # As clients do before calling: the proxy passes the tools' annotations on from it.
        tools = await session.list_tools()
        if scenario == "basic":
            out["tools"] = {
                t.name: t.annotations.model_dump(exclude_none=True) if t.annotations else None
                for t in tools.tools
            }
            r = await session.call_tool("echo", {"text": "hello"})
            out["echo"] = [r.is_error, text_of(r)]
            resource = await session.read_resource("info://server")
            out["resource"] = [c.text for c in resource.contents]
            progress: list = []

            async def on_progress(p, total, message):
                progress.append([p, total, message])

            r = await session.call_tool("slow_count", {"n": 3}, progress_callback=on_progress)
            out["slow_count"] = [r.is_error, text_of(r)]
            out["server_progress"] = progress
            r = await session.call_tool("echo", {"text": "my secret is 42"})
            out["blocked"] = [r.is_error, text_of(r)]
        elif scenario == "held":
            progress = []

            async def on_progress(p, total, message):
                progress.append(message)

            r = await session.call_tool("write_note", {"text": args[0]}, progress_callback=on_progress)
            out["held"] = [r.is_error, text_of(r)]
            out["progress"] = progress
        elif scenario == "cancel":
            try:
                await session.call_tool(
                    "write_note", {"text": args[0]}, read_timeout_seconds=float(args[1])
                )
                out["cancelled"] = False
            except Exception as e:  # the SDK raises on its timeout, after sending notifications/cancelled
                out["cancelled"] = type(e).__name__
            await asyncio.sleep(1.0)
            r = await session.call_tool("echo", {"text": "after the cancel"})
            out["after"] = [r.is_error, text_of(r)]
        elif scenario == "crash":
            try:
                r = await asyncio.wait_for(session.call_tool("crash", {}), timeout=20)
                out["crash"] = ["result", r.is_error, text_of(r)]
            except Exception as e:
                out["crash"] = ["raised", type(e).__name__, str(e)]
        elif scenario == "echo":
            r = await session.call_tool("echo", {"text": args[0]})
            out["echo"] = [r.is_error, text_of(r)]
        elif scenario == "time":
            r = await session.call_tool("get_current_time", {"timezone": "UTC"})
            out["time"] = [r.is_error, text_of(r)]
            r = await session.call_tool("get_current_time", {"timezone": "Not/AZone"})
            out["bad_zone"] = [r.is_error, text_of(r)]


print(json.dumps(asyncio.run(main(sys.argv[1], sys.argv[2:]))))
