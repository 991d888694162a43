"""What Dear PyGui itself can draw here: frames per second of an empty window and of a bare
node editor (no nodeflow code), at the editor's window size, for comparison with
bench_editor.py. Under Xvfb the drawing is done on the CPU (Mesa llvmpipe), and the node
editor's cost grows with the canvas area, so this is the ceiling the editor can reach.

    .venv/bin/python -m benchmarks.bench_dpg_ceiling          # starts its own Xvfb
"""

from __future__ import annotations

import json
import subprocess
import sys
import time

CASES = [  # (label, nodes, width, height)
    ("empty window", None, 1600, 1000),
    ("node editor, 1 node", 1, 1600, 1000),
    ("node editor, 10 nodes", 10, 1600, 1000),
    ("node editor, 200 nodes", 200, 1600, 1000),
    ("node editor, 10 nodes, 800x500", 10, 800, 500),
]


def measure(nodes: int | None, width: int, height: int, seconds: float = 3.0) -> tuple[float, float]:
    """Frames per second drawn flat out, and CPU milliseconds per frame (all threads:
    llvmpipe rasterises on several), which is what an idle editor pays per frame."""
    import dearpygui.dearpygui as dpg

    dpg.create_context()
    dpg.create_viewport(width=width, height=height)
    dpg.setup_dearpygui()
    with dpg.window(width=width, height=height):
        if nodes is None:
            dpg.add_text("empty")
        else:
            with dpg.node_editor(minimap=True):
                for i in range(nodes):
                    with dpg.node(label=f"node {i}", pos=(40 + (i % 6) * 220, 40 + (i // 6) * 180)):
                        for j in range(4):
                            with dpg.node_attribute():
                                dpg.add_input_float(label=f"value {j}", width=100)
    dpg.show_viewport()
    for _ in range(30):  # let the first frames (font atlas, layout) pass
        dpg.render_dearpygui_frame()
    began, cpu, frames = time.perf_counter(), time.process_time(), 0
    while time.perf_counter() - began < seconds:
        dpg.render_dearpygui_frame()
        frames += 1
    fps = frames / (time.perf_counter() - began)
    cpu_ms = 1000 * (time.process_time() - cpu) / frames
    dpg.destroy_context()
    return fps, cpu_ms


def main() -> int:
    if len(sys.argv) > 1 and sys.argv[1] == "--one":  # child process: one case, one DPG context
        nodes = None if sys.argv[2] == "none" else int(sys.argv[2])
        print(json.dumps(measure(nodes, int(sys.argv[3]), int(sys.argv[4]))))
        return 0
    from benchmarks.bench_editor import start_xvfb

    display, server = start_xvfb("1600x1000")
    try:
        for label, nodes, width, height in CASES:
            out = subprocess.run(
                [sys.executable, __file__, "--one", str(nodes or "none"), str(width), str(height)],
                env={**__import__("os").environ, "DISPLAY": display},
                capture_output=True, text=True, check=True,
            ).stdout
            fps, cpu_ms = json.loads(out.strip().splitlines()[-1])
            print(f"{label:<34} {fps:7.1f} FPS  {cpu_ms:6.1f} CPU ms/frame")
    finally:
        if server is not None:
            server.terminate()
    return 0


if __name__ == "__main__":
    sys.exit(main())
