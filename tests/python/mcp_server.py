"""An MCP server written for Writ's tests (the official Python SDK, `mcp` 2.x): tools that
record each invocation, a resource, progress, and a tool that makes the server exit.

Usage: python mcp_server.py                   (stdio)
       python mcp_server.py --http PORT [--json] (Streamable HTTP on 127.0.0.1:PORT/mcp,
                                                 answering in JSON rather than event streams)
Every tool invocation is appended to $MCP_RECORD_FILE as a JSON line, with the Authorization
header the server received when it came over HTTP.
"""

import asyncio
import json
import os
import sys

from mcp.server.mcpserver import Context, MCPServer
from mcp.types import ToolAnnotations

RECORD = os.environ["MCP_RECORD_FILE"]

mcp = MCPServer(name="writ-test-server", version="0.1.0")


def record(event: dict, ctx: Context | None = None) -> None:
    headers = ctx.headers if ctx is not None else None
    if headers is not None:
        event["auth"] = headers.get("authorization")
    with open(RECORD, "a") as f:
        f.write(json.dumps(event) + "\n")


@mcp.tool(annotations=ToolAnnotations(readOnlyHint=True))
def echo(text: str, ctx: Context) -> str:
    """Answers with its text."""
    record({"tool": "echo", "text": text}, ctx)
    return text


@mcp.tool(annotations=ToolAnnotations(destructiveHint=True, readOnlyHint=False))
def write_note(text: str, ctx: Context) -> str:
    """Writes a note (destructive, as its server declares)."""
    record({"tool": "write_note", "text": text}, ctx)
    return f"noted: {text}"


@mcp.tool(annotations=ToolAnnotations(readOnlyHint=True))
async def slow_count(n: int, ctx: Context) -> str:
    """Counts to n, reporting progress at each step."""
    record({"tool": "slow_count", "n": n}, ctx)
    for i in range(1, n + 1):
        await asyncio.sleep(0.05)
        await ctx.report_progress(i, n, f"step {i}")
    return f"counted to {n}"


@mcp.tool()
def crash(ctx: Context) -> str:
    """Makes the server exit mid-session."""
    record({"tool": "crash"}, ctx)
    os._exit(3)


@mcp.resource("info://server", mime_type="text/plain")
def server_info() -> str:
    return "writ test server resource"


if __name__ == "__main__":
    if len(sys.argv) >= 3 and sys.argv[1] == "--http":
        mcp.run(
            transport="streamable-http",
            host="127.0.0.1",
            port=int(sys.argv[2]),
            json_response="--json" in sys.argv[3:],
        )
    else:
        mcp.run()
