"""``nodeflow serve``: an HTTP + WebSocket server with a persistent job queue.

It speaks nodeflow's own API (``/v1``, documented at ``/docs``) and ComfyUI's (``/prompt``,
``/ws``, ``/history``, ``/view``, ...), so existing ComfyUI clients work unchanged. See
docs/server.md. Modules, one job each:

- :mod:`.config`        what the server is configured with
- :mod:`.guard`         Host/Origin/token checks and body caps, before any route
- :mod:`.store`         the jobs in SQLite (WAL, one transaction per change)
- :mod:`.submit`        a request's workflow -> a queued job, or the reasons it cannot run
- :mod:`.worker`        one thread per device running jobs; cancel by id
- :mod:`.reporter`      executor events -> native and ComfyUI messages
- :mod:`.hub`           messages -> the WebSocket clients they are for, in order
- :mod:`.comfy_shapes`  jobs and problems in ComfyUI's shapes
- :mod:`.comfy_routes`, :mod:`.native_routes`, :mod:`.sockets`  the routes
- :mod:`.files`         /view and uploads, confined to their folders
- :mod:`.object_info`   node declarations in ComfyUI's object_info shape
- :mod:`.app`, :mod:`.run`  the ASGI app; starting it from the command line
- :mod:`.client`        ``nodeflow run --server``: a run handed to a running server (no web framework)

Importing this package imports neither torch nor a web framework; :mod:`.app` needs
FastAPI and uvicorn.
"""
