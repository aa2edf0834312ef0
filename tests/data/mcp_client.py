"""Calls the gateway's MCP endpoint with the official MCP Python client
(`mcp`, pinned in scripts/mcp.txt), unchanged: lists the tools and calls
each one, plus failing calls, and prints what it got as one JSON object.

Run by tests/tests/cross/mcp.rs:
  python3 mcp_client.py <url> <collection> <iris input row, JSON> [token]
The Rust side checks the answers; this script only exercises the client.
"""

import asyncio
import json
import sys

from mcp import ClientSession
from mcp.client.streamable_http import create_mcp_http_client, streamable_http_client

URL, COLLECTION, ROW = sys.argv[1], sys.argv[2], json.loads(sys.argv[3])
HEADERS = {"Authorization": f"Bearer {sys.argv[4]}"} if len(sys.argv) > 4 else None


def attr(o, snake, camel):
    # mcp 2.x names fields in snake_case; 1.x in camelCase.
    return getattr(o, snake) if hasattr(o, snake) else getattr(o, camel)


def result(r):
    text = [c.text for c in r.content if getattr(c, "type", "") == "text"]
    return {"is_error": bool(attr(r, "is_error", "isError")),
            "structured": attr(r, "structured_content", "structuredContent"), "text": text}


async def main():
    out = {}
    async with create_mcp_http_client(headers=HEADERS) as http, \
            streamable_http_client(URL, http_client=http) as streams:
        read, write = streams[0], streams[1]
        async with ClientSession(read, write) as session:
            init = await session.initialize()
            out["protocol_version"] = attr(init, "protocol_version", "protocolVersion")
            out["server"] = attr(init, "server_info", "serverInfo").name
            tools = await session.list_tools()
            out["tools"] = {
                t.name: {"input": attr(t, "input_schema", "inputSchema"),
                         "output": attr(t, "output_schema", "outputSchema"), "description": t.description}
                for t in tools.tools
            }
            calls = {
                "embed": {"texts": ["hello world", "the weather is nice"]},
                "list_collections": {},
                "search": {"collection": COLLECTION, "query": "heavy snow tonight", "limit": 2},
                "rag_context": {"collection": COLLECTION, "query": "what does the striker do?", "top_k": 2},
                "list_models": {},
                "predict": {"model": "iris-logreg", "inputs": [
                    {"name": "input", "datatype": "FP32", "shape": [1, 4], "data": ROW}]},
                "run_pipeline": {"pipeline": "topic", "inputs": {"text": ["Whisk the eggs with sugar"]}},
            }
            out["calls"] = {}
            for name, args in calls.items():
                out["calls"][name] = result(await session.call_tool(name, args))
            out["errors"] = {
                "unknown_collection": result(await session.call_tool(
                    "search", {"collection": "no-such-collection", "query": "x"})),
                "bad_tensor": result(await session.call_tool("predict", {"model": "iris-logreg", "inputs": [
                    {"name": "input", "datatype": "FP32", "shape": [1, 4], "data": [1, 2]}]})),
            }
    print(json.dumps(out))


asyncio.run(main())
