"""What a LoRA costs in a cached graph: the first run with it (the adapter is injected into the
shared UNet and text encoder), a run after changing its strength (no file is read; only the
LoRA node and what follows it run again), and the base graph afterwards (the seed of the first run again, so
the sampler runs on the shared UNet; it must give the very same image: the difference printed is the largest per-pixel one, expected 0.0).
On the tiny SD model, so the figures are overheads around a very small UNet.

    .venv/bin/python -m benchmarks.bench_lora
"""

from __future__ import annotations

import os
import tempfile
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")


def main() -> None:
    import numpy as np
    import torch
    from diffusers import StableDiffusionPipeline
    from peft import LoraConfig
    from peft.utils import get_peft_model_state_dict

    import nodeflow.api as api
    from nodeflow import RunSettings
    from tests.support import WORKFLOWS
    from tests.support.tiny_models import build_tiny_sd

    work = Path(tempfile.mkdtemp(prefix="bench_lora_"))
    tiny = build_tiny_sd(work / "tiny-sd")
    pipe = StableDiffusionPipeline.from_pretrained(tiny, local_files_only=True, safety_checker=None)
    torch.manual_seed(0)
    pipe.unet.add_adapter(LoraConfig(r=8, lora_alpha=8, init_lora_weights=False, target_modules=["to_q", "to_k", "to_v", "to_out.0"]))
    (work / "loras").mkdir()
    StableDiffusionPipeline.save_lora_weights(work / "loras", unet_lora_layers=get_peft_model_state_dict(pipe.unet),
                                              weight_name="lora.safetensors")
    settings = RunSettings(model_folders={"checkpoints": [work], "loras": [work / "loras"]})
    flow = api.open(WORKFLOWS / "txt2img.json", device="cpu")
    flow.set("1.checkpoint", tiny.name).set("7.steps", 10).set("7.sampler", "euler")

    def run(label: str) -> np.ndarray:
        start = time.perf_counter()
        result = flow.run(output_dir=work / "out", settings=settings)
        seconds = time.perf_counter() - start
        print(f"{label:38s} {seconds * 1000:8.1f} ms   ran: {' '.join(sorted(result.executed))}")
        return result.outputs["9"]["images"].numpy()

    flow.set("5.seed", 42)
    first = run("base, first run (loads the checkpoint)")
    run("base, seed unchanged (all cached)")
    flow.set("5.seed", 43)
    run("base, new seed")
    flow.add("LoRAModelOnly", node_id="L", lora_name="lora.safetensors", strength_model=1.0)
    flow.connect("1.model", "L.model").connect("L.model", "6.model")
    run("LoRA, first run (injects the adapter)")
    flow.set("L.strength_model", 0.5)
    run("LoRA, strength changed")
    flow.connect("1.model", "6.model").set("5.seed", 42)
    again = run("base, seed 42 again (adapter off)")
    print(f"base image (seed 42) before and after the LoRA runs: max |difference| = {float(np.abs(again - first).max())}")


if __name__ == "__main__":
    main()
