"""nodeflow side by side with diffusers and ComfyUI on the same work, stage by stage.

    .venv/bin/python -m benchmarks.bench_vs_peers [--comfyui DIR] [--repeats 6] [--quick]

The work: one SD 1.5-architecture checkpoint (random, seeded weights; built once from the
shipped SD1 configs and saved as one original-layout fp16 .safetensors, about 2 GB, under
``build/peers/``, which git ignores), 256x256, euler, normal schedule, 10 steps, CFG 7, a
positive and a negative prompt, one image. ``--quick``: the bundled "shapes" model instead
(32x32, nodeflow and diffusers only: ComfyUI does not recognise a model that small).

Each tool runs in its own process, the tools alternate (each round in another order, so
that every tool follows every other equally often: see ``benchmarks/orders.py``), and each
figure is the median of ``--repeats`` rounds:

- nodeflow: a worker process that does what ``nodeflow run`` does (registry, settings,
  executor) on the workflow, imported from the ComfyUI prompt by nodeflow's own importer;
  then the same run again (cached re-run) and a VAE encode of the image;
- diffusers: StableDiffusionPipeline from a diffusers folder of the same weights
  (its native format), prompt embeddings, the pipeline's sampling to latents, AutoencoderKL
  decode and encode, each timed;
- ComfyUI (``--comfyui DIR``: a folder made by ``bash ../shared/peers/comfyui/setup.sh DIR``):
  its own venv, as a server on loopback; the prompt POSTed, node start times read from
  its WebSocket; then the same prompt again (cached re-run). Never imported here.

``--drop-caches`` empties the page cache before each tool's run (root only), so the
libraries and the checkpoint come from disk, as in a first run after the machine starts.

Cold start is process start to the image on disk; load, encode (both prompts), sample
(per step) and decode are the nodes' own times in that first run; peak RSS is the
process's high-water mark (VmHWM); CPU is user+system seconds of the whole process.
The machine is shared: read the ratios, and the load average printed with them.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
BUILD = ROOT / "build" / "peers"
CKPT_NAME = "sd15-random-fp16.safetensors"
POSITIVE = "a photograph of a red fox in the snow, detailed"
NEGATIVE = "blurry, low quality"
SEED = 42
STEPS = 10
CFG_SCALE = 7.0
SIZE = 256
QUICK_SIZE = 32


def comfy_prompt(ckpt: str, size: int, prefix: str) -> dict:
    """The work, as a ComfyUI API-format prompt (nodeflow imports the same document)."""
    return {
        "4": {"class_type": "CheckpointLoaderSimple", "inputs": {"ckpt_name": ckpt}},
        "6": {"class_type": "CLIPTextEncode", "inputs": {"text": POSITIVE, "clip": ["4", 1]}},
        "7": {"class_type": "CLIPTextEncode", "inputs": {"text": NEGATIVE, "clip": ["4", 1]}},
        "5": {"class_type": "EmptyLatentImage", "inputs": {"width": size, "height": size, "batch_size": 1}},
        "3": {"class_type": "KSampler", "inputs": {
            "seed": SEED, "steps": STEPS, "cfg": CFG_SCALE, "sampler_name": "euler", "scheduler": "normal",
            "denoise": 1.0, "model": ["4", 0], "positive": ["6", 0], "negative": ["7", 0], "latent_image": ["5", 0]}},
        "8": {"class_type": "VAEDecode", "inputs": {"samples": ["3", 0], "vae": ["4", 2]}},
        "9": {"class_type": "SaveImage", "inputs": {"filename_prefix": prefix, "images": ["8", 0]}},
    }


# -- the checkpoint ---------------------------------------------------------------------


def build_checkpoint() -> tuple[Path, Path]:
    """The random SD 1.5 model: one original-layout fp16 file, and the same weights as a
    diffusers folder (for diffusers' own loader). Built once; reused while present."""
    ckpt, folder = BUILD / CKPT_NAME, BUILD / "sd15-random-diffusers"
    if ckpt.is_file() and (folder / "model_index.json").is_file():
        return ckpt, folder
    from nodes.diffusion.impl import torchvision_compat  # noqa: F401  (spandrel's torchvision, see there)
    import torch
    from diffusers import AutoencoderKL, UNet2DConditionModel
    from safetensors.torch import save_file
    from transformers import CLIPTextConfig, CLIPTextModel

    from nodes.diffusion.impl.tokenizer import PAD_END, clip_tokenizer
    from tests.support.tiny_models import _vae_value_to_ldm, unet_key_to_ldm, vae_key_to_ldm

    configs = ROOT / "nodes" / "diffusion" / "configs" / "sd1"
    read = lambda name: json.loads((configs / name / "config.json").read_text())  # noqa: E731
    print("building the random SD 1.5 checkpoint (once; a minute or two) ...", flush=True)
    torch.manual_seed(0)
    unet_config = read("unet")
    unet = UNet2DConditionModel.from_config(unet_config).half()
    vae = AutoencoderKL.from_config(read("vae")).half()
    text = CLIPTextModel(CLIPTextConfig(**{k: v for k, v in read("text_encoder").items() if not k.startswith("_")}))
    text = text.half()
    tokenizer = clip_tokenizer(PAD_END)
    staging = folder.with_name(folder.name + ".partial")
    shutil.rmtree(staging, ignore_errors=True)
    unet.save_pretrained(staging / "unet")
    vae.save_pretrained(staging / "vae")
    text.save_pretrained(staging / "text_encoder")
    tokenizer.save_pretrained(staging / "tokenizer")
    shutil.copytree(configs / "scheduler", staging / "scheduler")
    shutil.copy(configs / "model_index.json", staging / "model_index.json")

    state = {}
    for key, value in unet.state_dict().items():
        state["model.diffusion_model." + unet_key_to_ldm(key, unet_config)] = value
    blocks = len(read("vae")["block_out_channels"])
    for key, value in vae.state_dict().items():
        state["first_stage_model." + vae_key_to_ldm(key, blocks)] = _vae_value_to_ldm(key, value)
    for key, value in text.state_dict().items():
        key = key if key.startswith("text_model.") else "text_model." + key
        state["cond_stage_model.transformer." + key] = value
    ckpt.parent.mkdir(parents=True, exist_ok=True)
    save_file({k: v.contiguous() for k, v in state.items()}, str(ckpt) + ".partial")
    os.replace(str(ckpt) + ".partial", ckpt)
    shutil.rmtree(folder, ignore_errors=True)
    os.replace(staging, folder)
    return ckpt, folder


# -- measuring processes ----------------------------------------------------------------


def peak_rss_mb(pid: int | str = "self") -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def run_worker(kind: str, args: argparse.Namespace, work: dict) -> dict:
    """One worker process (nodeflow or diffusers); its figures plus wall and CPU time.
    ``nodeflow-before`` is the nodeflow worker on the checkout named by ``--before``."""
    code = Path(args.before).resolve() if kind == "nodeflow-before" else ROOT
    env = {**os.environ, "PYTHONPATH": str(code), "HF_HUB_OFFLINE": "1", "BENCH_SPAWN": repr(time.time())}
    # Run as a script, so that nodeflow and its packs come from ``code`` (this file may not be there).
    cmd = [sys.executable, str(Path(__file__).resolve()), "--worker", kind.removesuffix("-before"),
           "--work", json.dumps(work)]
    proc = subprocess.Popen(cmd, cwd=code, env=env, stdout=subprocess.PIPE, text=True)
    out, _ = proc.communicate()
    if proc.returncode:
        raise SystemExit(f"{kind} worker failed ({proc.returncode}):\n{out[-3000:]}")
    figures = json.loads(out.strip().splitlines()[-1])
    return figures


def drop_page_cache() -> None:
    """Write the dirty pages out, then drop the clean page cache (needs root)."""
    os.sync()
    try:
        Path("/proc/sys/vm/drop_caches").write_text("1\n")
    except OSError as error:
        raise SystemExit(f"--drop-caches: cannot drop the page cache ({error.strerror}; it needs root)") from None


def _children_cpu() -> float:
    import resource

    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def measure(kind: str, args: argparse.Namespace, work: dict) -> dict:
    before = _children_cpu()
    figures = run_worker(kind, args, work)
    figures["cpu"] = _children_cpu() - before
    return figures


# -- workers (run inside their own process) ---------------------------------------------


def worker_nodeflow(work: dict) -> dict:
    spawn = float(os.environ["BENCH_SPAWN"])
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # as the CLI sets it
    from nodeflow import api
    from nodeflow.host.settings import build_run_settings
    from nodeflow.model.registry import default_registry

    registry = default_registry()
    out = tempfile.mkdtemp(prefix="bench-nf-")
    flow = api.from_dict(comfy_prompt(work["ckpt"], work["size"], "nf"), registry)
    settings = build_run_settings(registry, models=work["models"], previews=False, embed_workflow=False)
    result = flow.run(output_dir=out, settings=settings)
    first = time.time() - spawn
    t = result.timings
    figures = {
        "cold": first, "load": t["4"], "encode": t["6"] + t["7"], "sample_step": t["3"] / STEPS, "decode": t["8"],
    }
    start = time.perf_counter()
    flow.run(output_dir=out, settings=settings)
    figures["cached"] = time.perf_counter() - start
    flow.set("3.noise", "seed", SEED + 1)  # the importer's Noise node: sampling and decoding again, warm
    again = flow.run(output_dir=out, settings=settings).timings
    figures["sample_step_warm"], figures["decode_warm"] = again["3"] / STEPS, again["8"]
    figures["vae_encode"] = _nodeflow_encode(flow, settings, result.outputs["9"]["images"])
    figures["rss"] = peak_rss_mb()
    shutil.rmtree(out, ignore_errors=True)
    return figures


def _nodeflow_encode(flow, settings, decoded) -> float:
    """The VAEEncode node on the decoded image, with the loaded VAE from the executor's cache."""
    from nodeflow import RunContext
    from nodes.diffusion.vae import VAEEncode

    entries = flow.executor.cache._entries.values()  # a benchmark may look inside
    vae = next(entry.outputs["vae"] for entry in entries if "vae" in entry.outputs)
    ctx = RunContext(node_id="encode", settings=settings)
    start = time.perf_counter()
    VAEEncode().run(ctx, vae=vae, image=decoded)
    return time.perf_counter() - start


def worker_diffusers(work: dict) -> dict:
    spawn = float(os.environ["BENCH_SPAWN"])
    start = time.perf_counter()
    # the venv's torchvision (spandrel's) fails to import on CPU torch without nodeflow's
    # shim, and transformers imports it: the same shim nodeflow runs with, so both tools
    # import the same libraries
    from nodes.diffusion.impl import torchvision_compat  # noqa: F401
    import torch
    from diffusers import EulerDiscreteScheduler, StableDiffusionPipeline

    imports = time.perf_counter() - start

    start = time.perf_counter()
    pipe = StableDiffusionPipeline.from_pretrained(work["folder"], torch_dtype=torch.float32, local_files_only=True,
                                                   safety_checker=None, requires_safety_checker=False)
    pipe.scheduler = EulerDiscreteScheduler.from_config(pipe.scheduler.config)
    pipe.set_progress_bar_config(disable=True)
    load = time.perf_counter() - start
    with torch.inference_mode():
        start = time.perf_counter()
        positive, negative = pipe.encode_prompt(POSITIVE, "cpu", 1, True, NEGATIVE)
        encode = time.perf_counter() - start
        start = time.perf_counter()
        latents = pipe(prompt_embeds=positive, negative_prompt_embeds=negative, height=work["size"],
                       width=work["size"], num_inference_steps=STEPS, guidance_scale=CFG_SCALE,
                       generator=torch.Generator("cpu").manual_seed(SEED), output_type="latent").images
        sample = time.perf_counter() - start
        start = time.perf_counter()
        pixels = pipe.vae.decode(latents / pipe.vae.config.scaling_factor).sample
        decode = time.perf_counter() - start
        image = pipe.image_processor.postprocess(pixels, output_type="pil")[0]
        out = Path(tempfile.mkdtemp(prefix="bench-df-"))
        image.save(out / "diffusers.png")
        first = time.time() - spawn
        start = time.perf_counter()
        latents = pipe(prompt_embeds=positive, negative_prompt_embeds=negative, height=work["size"],
                       width=work["size"], num_inference_steps=STEPS, guidance_scale=CFG_SCALE,
                       generator=torch.Generator("cpu").manual_seed(SEED + 1), output_type="latent").images
        sample_warm = time.perf_counter() - start
        start = time.perf_counter()
        pixels = pipe.vae.decode(latents / pipe.vae.config.scaling_factor).sample
        decode_warm = time.perf_counter() - start
        start = time.perf_counter()
        pipe.vae.encode(pixels.clamp(-1, 1)).latent_dist.mean
        vae_encode = time.perf_counter() - start
    shutil.rmtree(out, ignore_errors=True)
    return {"cold": first, "load": load, "encode": encode, "sample_step": sample / STEPS, "decode": decode,
            "vae_encode": vae_encode, "sample_step_warm": sample_warm / STEPS, "decode_warm": decode_warm,
            "import": imports, "rss": peak_rss_mb()}


# -- ComfyUI as a server ----------------------------------------------------------------


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _get(url: str, timeout: float = 5) -> dict:
    with urllib.request.urlopen(url, timeout=timeout) as response:
        return json.loads(response.read())


def measure_comfyui(comfy: Path, work: dict) -> dict:
    from websockets.sync.client import connect

    port = _free_port()
    base = Path(tempfile.mkdtemp(prefix="bench-comfy-"))
    for sub in ("out", "temp", "user"):
        (base / sub).mkdir()
    (base / "paths.yaml").write_text(f"bench:\n  checkpoints: {Path(work['ckpt_path']).parent}\n")
    cmd = [str(comfy / "venv" / "bin" / "python"), str(comfy / "comfy" / "main.py"), "--cpu", "--listen", "127.0.0.1",
           "--port", str(port), "--disable-auto-launch", "--front-end-root", str(comfy / "empty-frontend"),
           "--extra-model-paths-config", str(base / "paths.yaml"), "--output-directory", str(base / "out"),
           "--temp-directory", str(base / "temp"), "--user-directory", str(base / "user")]
    spawn = time.time()
    log = open(base / "log.txt", "w")
    proc = subprocess.Popen(cmd, cwd=comfy / "comfy", stdout=log, stderr=subprocess.STDOUT)
    try:
        while True:
            if proc.poll() is not None:
                raise SystemExit(f"ComfyUI exited ({proc.returncode}):\n{(base / 'log.txt').read_text()[-2000:]}")
            try:
                _get(f"http://127.0.0.1:{port}/system_stats", 1)
                break
            except OSError:
                time.sleep(0.1)
        with connect(f"ws://127.0.0.1:{port}/ws?clientId=bench", max_size=None) as ws:
            starts, done = _comfy_job(ws, port, comfy_prompt(CKPT_NAME, work["size"], "comfy"))
            first = done - spawn
            order = sorted(starts, key=starts.get)
            following = {node: (starts[order[i + 1]] if i + 1 < len(order) else done) for i, node in enumerate(order)}
            span = {node: following[node] - starts[node] for node in order}
            _, again = _comfy_job(ws, port, comfy_prompt(CKPT_NAME, work["size"], "comfy"), started=True)
            reseeded = comfy_prompt(CKPT_NAME, work["size"], "comfy")
            reseeded["3"]["inputs"]["seed"] = SEED + 1
            warm, warm_done = _comfy_job(ws, port, reseeded)
            warm_span = {"3": warm["8"] - warm["3"], "8": warm["9"] - warm["8"]}
        figures = {"cold": first, "load": span.get("4", float("nan")),
                   "encode": span.get("6", 0) + span.get("7", 0), "sample_step": span.get("3", float("nan")) / STEPS,
                   "decode": span.get("8", float("nan")), "cached": again,
                   "sample_step_warm": warm_span["3"] / STEPS, "decode_warm": warm_span["8"], "rss": peak_rss_mb(proc.pid),
                   "cpu": cpu_seconds(proc.pid)}
        return figures
    finally:
        proc.terminate()
        proc.wait(30)
        log.close()
        shutil.rmtree(base, ignore_errors=True)


def _comfy_job(ws, port: int, prompt: dict, started: bool = False) -> tuple[dict, float]:
    """POST the prompt; node start times from the WebSocket until it finishes."""
    body = json.dumps({"prompt": prompt, "client_id": "bench"}).encode()
    request = urllib.request.Request(f"http://127.0.0.1:{port}/prompt", body, {"Content-Type": "application/json"})
    posted = time.perf_counter()
    with urllib.request.urlopen(request, timeout=30) as response:
        prompt_id = json.loads(response.read())["prompt_id"]
    starts: dict[str, float] = {}
    while True:
        message = ws.recv()
        if isinstance(message, bytes):
            continue
        event = json.loads(message)
        data = event.get("data", {})
        if data.get("prompt_id") not in (None, prompt_id):
            continue
        if event["type"] == "executing" and data.get("node") is not None:
            starts[str(data["node"])] = time.time()
        elif event["type"] == "execution_error":
            raise SystemExit(f"ComfyUI failed: {data.get('exception_message')}")
        elif event["type"] == "execution_success" or (event["type"] == "executing" and data.get("node") is None):
            return starts, (time.perf_counter() - posted if started else time.time())


# -- the table --------------------------------------------------------------------------

ROWS = [("cold", "cold start to image", "s"), ("import", "imports before load (diffusers)", "s"), ("load", "checkpoint load", "s"), ("encode", "prompt encode (2)", "s"),
        ("sample_step", "sampling per step", "s"), ("decode", "VAE decode", "s"),
        ("sample_step_warm", "sampling per step, warm", "s"), ("decode_warm", "VAE decode, warm", "s"), ("vae_encode", "VAE encode", "s"),
        ("cached", "cached re-run", "s"), ("rss", "peak RSS", "MB"), ("cpu", "CPU (user+sys)", "s")]


def table(results: dict[str, list[dict]]) -> str:
    tools = [t for t in ("nodeflow", "nodeflow-before", "diffusers", "comfyui") if results.get(t)]
    head = "| stage | " + " | ".join(tools) + " | " + " | ".join(f"nodeflow/{t}" for t in tools[1:]) + " |"
    lines = [head, "|" + "---|" * (1 + 2 * len(tools) - 1)]
    for key, label, unit in ROWS:
        medians = {}
        for tool in tools:
            values = [r[key] for r in results[tool] if r.get(key) is not None]
            medians[tool] = statistics.median(values) if values else None
        cells = [_fmt(medians[t], unit) for t in tools]
        ratios = [f"{medians['nodeflow'] / medians[t]:.2f}" if medians["nodeflow"] and medians[t] else "-"
                  for t in tools[1:]]
        lines.append(f"| {label} | " + " | ".join(cells) + " | " + " | ".join(ratios) + " |")
    return "\n".join(lines)


def _fmt(value: float | None, unit: str) -> str:
    if value is None:
        return "-"
    if unit == "MB":
        return f"{value:,.0f} MB"
    return f"{value:.3f} s" if value < 1 else f"{value:.2f} s"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--comfyui", metavar="DIR", help="a ComfyUI set-up folder (setup.sh DIR); omitted: not measured")
    parser.add_argument("--repeats", type=int, default=6,
                        help="rounds; 6 completes the balanced order of two or three tools (about 20 minutes with ComfyUI)")
    parser.add_argument("--quick", action="store_true", help="the bundled model only (nodeflow and diffusers)")
    parser.add_argument("--before", metavar="DIR", help="also measure nodeflow from another checkout (e.g. main), "
                        "as nodeflow-before: before/after figures in one run")
    parser.add_argument("--only", action="append", choices=["nodeflow", "nodeflow-before", "diffusers", "comfyui"],
                        help="measure only these tools (repeatable)")
    parser.add_argument("--drop-caches", action="store_true",
                        help="empty the page cache before every tool's run (root only): a first run after boot, "
                        "with the libraries and the checkpoint read from disk")
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    parser.add_argument("--work", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        work = json.loads(args.work)
        figures = {"nodeflow": worker_nodeflow, "diffusers": worker_diffusers}[args.worker](work)
        print(json.dumps(figures))
        return

    if args.quick:
        folder = ROOT / "nodes" / "bundled" / "models" / "shapes"
        work = {"ckpt": "shapes", "models": [], "folder": str(folder), "size": QUICK_SIZE}
        tools = ["nodeflow", "diffusers"]
    else:
        ckpt, folder = build_checkpoint()
        work = {"ckpt": CKPT_NAME, "models": [str(ckpt.parent)], "folder": str(folder), "size": SIZE,
                "ckpt_path": str(ckpt)}
        tools = (["comfyui"] if args.comfyui else []) + ["nodeflow", "diffusers"]
    if args.before:
        tools.insert(tools.index("nodeflow") + 1, "nodeflow-before")
    if args.only:
        tools = [t for t in tools if t in args.only]
    from benchmarks.orders import run_rounds  # here: workers run this file from other checkouts

    def one(tool: str) -> dict:
        if args.drop_caches:
            drop_page_cache()
        return measure_comfyui(Path(args.comfyui), work) if tool == "comfyui" else measure(tool, args, work)

    results = run_rounds(tools, args.repeats, one)
    print(f"median of {args.repeats}; {'bundled model 32x32' if args.quick else 'SD 1.5 random fp16 256x256'}, "
          f"euler, {STEPS} steps, CFG {CFG_SCALE:g}\n")
    print(table(results))


if __name__ == "__main__":
    main()
