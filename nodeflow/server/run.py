"""Starting the server: the banner (address, token), then uvicorn until Ctrl+C or SIGTERM.

Stopping lets the running job end as ``interrupted`` and closes the database cleanly; a
``kill -9`` is handled at the next start instead (see :mod:`.store`).
"""

from __future__ import annotations

import sys
from typing import TextIO

from nodeflow.model.registry import NodeRegistry
from .config import ServerConfig, with_token


def serve(config: ServerConfig, registry: NodeRegistry, out: TextIO = sys.stderr, log_level: str = "warning") -> int:
    import uvicorn

    from .app import create_app

    config, generated = with_token(config)
    app = create_app(config, registry)
    service = app.state.service
    host = f"[{config.host}]" if ":" in config.host else config.host
    print(f"nodeflow serve: http://{host}:{config.port}  (API docs: /docs, jobs in {config.database})", file=out)
    if service.recovered:
        print(f"nodeflow serve: {len(service.recovered)} job(s) were running when the server stopped; "
              "marked interrupted", file=out)
    if service.store.resumed:
        print(f"nodeflow serve: {len(service.store.resumed)} sweep(s) were running when the server stopped; "
              "queued again, to resume where they were", file=out)
    if config.token:
        origin = "generated for this run" if generated else "given"
        print(f"nodeflow serve: token ({origin}): {config.token}", file=out)
        print("nodeflow serve: send it as 'Authorization: Bearer TOKEN' or ?token=TOKEN", file=out)
    out.flush()
    server = uvicorn.Server(uvicorn.Config(
        app, host=config.host, port=config.port, log_level=log_level, ws_max_size=1 << 20,
        timeout_graceful_shutdown=5, lifespan="on", server_header=False,
    ))
    server.run()
    return 0
