"""Nodes that show how diffusion works, on any model (and the bundled one in seconds):
forward noising, the sampler's insides per step, schedules compared, CLIP space and a
toy 2-D diffusion's score field. Their pictures are IMAGE outputs drawn with Pillow
(:mod:`.draw`), so they preview in the editor, save as PNGs and run headless. The
Sampler's own ``preview`` field shows the per-step views live. The workflows in
``workflows/explain/`` use them; docs/how-diffusion-works.md walks through them.
"""

from nodes.diffusion.explain.clip_space import CLIPSpace
from nodes.diffusion.explain.insides import SamplerInsides
from nodes.diffusion.explain.noising import ForwardNoise, NoisingStrip
from nodes.diffusion.explain.schedules import ScheduleCompare
from nodes.diffusion.explain.toy import TOY_DIFFUSION, ToyDiffusion, ToyScoreField

EXPLAIN_NODES = (ForwardNoise, NoisingStrip, SamplerInsides, ScheduleCompare, CLIPSpace, ToyDiffusion, ToyScoreField)
EXPLAIN_TYPES = (TOY_DIFFUSION,)
