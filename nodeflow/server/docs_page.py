"""``/docs``: the OpenAPI schema as a plain HTML page, rendered on the server.

FastAPI's own docs pages load their scripts from a CDN; this one needs nothing from the
network and runs no script, so it works offline and passes the server's Origin rules.
"""

from __future__ import annotations

import html
import json
from typing import Any


def render(schema: dict[str, Any]) -> str:
    info = schema.get("info", {})
    parts = [
        "<!doctype html><html><head><meta charset='utf-8'>",
        f"<title>{html.escape(info.get('title', 'API'))}</title>",
        "<style>body{font-family:sans-serif;max-width:60em;margin:2em auto;padding:0 1em}"
        "code,pre{background:#f4f4f4;padding:2px 4px}pre{padding:.6em;overflow:auto}"
        "h3{margin-bottom:.2em}.m{font-weight:bold;display:inline-block;width:5em}</style></head><body>",
        f"<h1>{html.escape(info.get('title', 'API'))} {html.escape(str(info.get('version', '')))}</h1>",
        f"<p>{html.escape(info.get('description', ''))}</p>",
        "<p>Machine-readable: <a href='/openapi.json'>/openapi.json</a>.</p>",
    ]
    by_tag: dict[str, list[str]] = {}
    for path, methods in schema.get("paths", {}).items():
        for method, op in methods.items():
            tag = (op.get("tags") or ["other"])[0]
            by_tag.setdefault(tag, []).append(_operation(path, method, op))
    for tag, items in by_tag.items():
        parts.append(f"<h2>{html.escape(tag)}</h2>")
        parts.extend(items)
    parts.append("<h2>WebSockets</h2><p><code>/ws?clientId=ID</code>: ComfyUI's events. "
                 "<code>/v1/events?job=ID</code>: nodeflow's events (see README).</p>")
    schemas = schema.get("components", {}).get("schemas", {})
    if schemas:
        parts.append("<h2>Schemas</h2>")
        for name, body in schemas.items():
            parts.append(f"<h3 id='{html.escape(name)}'>{html.escape(name)}</h3>"
                         f"<pre>{html.escape(json.dumps(body, indent=2))}</pre>")
    parts.append("</body></html>")
    return "".join(parts)


def _operation(path: str, method: str, op: dict[str, Any]) -> str:
    params = ", ".join(
        f"{html.escape(p['name'])} ({html.escape(p.get('in', ''))})" for p in op.get("parameters", [])
    )
    body = op.get("requestBody", {}).get("content", {}).get("application/json", {}).get("schema", {})
    ref = body.get("$ref", "").rsplit("/", 1)[-1]
    text = [f"<h3><span class='m'>{method.upper()}</span><code>{html.escape(path)}</code></h3>",
            f"<p>{html.escape(op.get('summary', ''))}</p>"]
    if params:
        text.append(f"<p>Parameters: {params}</p>")
    if ref:
        text.append(f"<p>Body: <a href='#{html.escape(ref)}'>{html.escape(ref)}</a></p>")
    return "".join(text)
