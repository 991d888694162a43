"""The diffusion pack: Stable-Diffusion-style text-to-image as nodes, on diffusers.

What travels on the links is declared in :mod:`nodes.diffusion.types` (the value
records and their data types); the nodes are one small module per family; their
implementation (loading, sampling, guidance, prompts, VAE) is in :mod:`nodes.diffusion.impl`;
the ComfyUI importer is :mod:`nodes.diffusion.comfyui`. Importing this package imports
no torch: the nodes import it when they run.
"""

from nodeflow import Pack
from nodes.diffusion.clip_similarity import CLIPSimilarity
from nodes.diffusion.clip_vision import CLIPVisionEncode, CLIPVisionLoader
from nodes.diffusion.comfyui import IMPORTER as COMFYUI_IMPORTER
from nodes.diffusion.conditioning import (
    ConditioningAverage, ConditioningCombine, ConditioningDirection, ConditioningSetArea, ConditioningSetTimestepRange,
    ConditioningStack, ConditioningZeroOut,
)
from nodes.diffusion.conditioning_regions import ConditioningSetAreaPercentage, ConditioningSetMask
from nodes.diffusion.explain import EXPLAIN_NODES, EXPLAIN_TYPES
from nodes.diffusion.controlnet import ControlNetApply, ControlNetApplyAdvanced, ControlNetLoader, SetUnionControlNetType
from nodes.diffusion.image_ops import (
    Canny, EmptyImage, ImageBatch, ImageBlend, ImageBlur, ImageFlip, ImageFromBatch, ImageQuantize, RepeatImageBatch, ImageCompositeMasked, ImageCrop, ImageInvert, ImagePadForOutpaint, ImageSharpen, ImageScale, ImageScaleBy, ImageScaleToTotalPixels,
)
from nodes.diffusion.image_ops import (
    GetImageSize, ImageAddNoise, ImageRGBToYUV, ImageRotate, ImageScaleToMaxDimension, ImageStitch, ImageYUVToRGB,
    Morphology, ResizeAndPadImage,
)
from nodes.diffusion.gligen import GLIGENLoader, GLIGENTextBoxApply
from nodes.diffusion.images import LoadImage, PreviewImage, PreviewMask, SaveImage
from nodes.diffusion.inpaint import InpaintModelConditioning, VAEEncodeForInpaint
from nodes.diffusion.instruct_pix2pix import InstructPixToPixConditioning
from nodes.diffusion.latent import EmptyLatent, LatentUpscale
from nodes.diffusion.latent_ops import (
    LatentBatch, LatentBatchSeedBehavior, LatentConcat, LatentCut, LatentFlip, LatentInterpolate, LatentRotate,
)
from nodes.diffusion.latent_ops import LatentAdd, LatentBlend, LatentComposite, LatentCompositeMasked, LatentMultiply, LatentSubtract, LatentCrop, LatentFromBatch, RepeatLatentBatch, SetLatentNoiseMask
from nodes.diffusion.model_ops import CLIPMerge, ModelMerge, ModelSampling
from nodes.diffusion.merge_blocks import ModelMergeBlocks, ModelMergeSD1, ModelMergeSDXL
from nodes.diffusion.model_edm import ModelSamplingEDM
from nodes.diffusion.model_save import CheckpointSave
from nodes.diffusion.model_patches import (
    DeepShrink, DifferentialDiffusion, EpsilonScale, FreeU, PerpNeg, PerturbedAttentionGuidance, RescaleCFG,
    SelfAttentionGuidance, UNetCrossAttentionMultiply, UNetSelfAttentionMultiply,
)
from nodes.diffusion.masks import FeatherMask, GrowMask, ImageToMask, InvertMask, LoadImageMask, MaskComposite, MaskToImage, SolidMask, ThresholdMask
from nodes.diffusion.masks import CropMask, ImageColorToMask
from nodes.diffusion.loaders import Checkpoint, UNet
from nodes.diffusion.lora import LoRA, LoRAModelOnly
from nodes.diffusion.part_loaders import DualTextEncoderLoader, TextEncoderLoader
from nodes.diffusion.devices import DEVICES
from nodes.diffusion.sampling import CFG, BasicGuider, DisableNoise, DualCFGGuider, Noise, PerpNegGuider, Sampler
from nodes.diffusion.sigmas import (
    AlignYourStepsScheduler, BetaSamplingScheduler, ExponentialScheduler, ExtendIntermediateSigmas, KarrasScheduler,
    LaplaceScheduler, ManualSigmas, PolyexponentialScheduler, SetFirstSigma, SplitSigmas, SplitSigmasDenoise, VPScheduler,
)
from nodes.diffusion.sdxl_text import TextEncoderSDXL, TextEncoderSDXLRefiner
from nodes.diffusion.text import TextEncoder
from nodes.diffusion.unclip import UnCLIPCheckpoint, UnCLIPConditioning
from nodes.diffusion.types import DATA_TYPES
from nodes.diffusion.upscale import ImageUpscaleWithModel, UpscaleModelLoader
from nodes.diffusion.vae import VAEDecode, VAEEncode
from nodes.diffusion.vae_loader import VAELoader

PACK = Pack(
    "diffusion",
    description="Stable Diffusion 1.x / 2.x / XL text-to-image on diffusers",
    nodes=(
        Checkpoint, UNet, TextEncoder, ConditioningCombine, ConditioningAverage, ConditioningDirection,
        EmptyLatent, LatentUpscale, Noise, DisableNoise, CFG, BasicGuider, Sampler, VAEDecode, VAEEncode,
        LoadImage, SaveImage, PreviewImage, CLIPSimilarity,
        # comfy-import: masks, pixel and latent operations
        ConditioningZeroOut, ImageScale, ImageScaleBy, ImageScaleToTotalPixels, ImageCrop, ImageInvert, ImageSharpen, ImageBlur, ImageQuantize, EmptyImage, RepeatImageBatch, ImageFromBatch, ImageFlip, ImageBlend,
        ImageCompositeMasked, ImageBatch, ImagePadForOutpaint, ImageToMask, MaskToImage, SolidMask, InvertMask, FeatherMask, GrowMask, ThresholdMask, MaskComposite,
        LoadImageMask, PreviewMask, LatentComposite, LatentCompositeMasked, LatentAdd, LatentSubtract, LatentMultiply, LatentBlend, LatentCrop, LatentFromBatch, RepeatLatentBatch, SetLatentNoiseMask,
        Canny, ModelSampling, ModelMerge, CLIPMerge, ConditioningStack, ConditioningSetArea, ConditioningSetTimestepRange,
        # Models of other kinds than checkpoints (issue 11).
        VAELoader, LoRA, LoRAModelOnly, ControlNetLoader, ControlNetApply, ControlNetApplyAdvanced, SetUnionControlNetType,
        VAEEncodeForInpaint, InpaintModelConditioning, InstructPixToPixConditioning, TextEncoderSDXL, TextEncoderSDXLRefiner,
        UpscaleModelLoader, ImageUpscaleWithModel,
        # A model's parts from their own files (issue 11).
        TextEncoderLoader, DualTextEncoderLoader,
        # Regions, schedules and merges (issue 11).
        ConditioningSetAreaPercentage, ConditioningSetMask, AlignYourStepsScheduler, KarrasScheduler, ExponentialScheduler,
        PolyexponentialScheduler, VPScheduler, BetaSamplingScheduler, LaplaceScheduler, ManualSigmas,
        SplitSigmas, SplitSigmasDenoise, SetFirstSigma, ExtendIntermediateSigmas, ModelMergeBlocks, ModelMergeSD1, ModelMergeSDXL, ModelSamplingEDM,
        # unCLIP and CLIP vision (issue 11).
        CLIPVisionLoader, CLIPVisionEncode, UnCLIPCheckpoint, UnCLIPConditioning,
        # GLIGEN, phrases grounded to boxes (issue 11).
        GLIGENLoader, GLIGENTextBoxApply,
        # Model patches: guidance and decoder changes while sampling (issue 11).
        RescaleCFG, FreeU, PerturbedAttentionGuidance, SelfAttentionGuidance, DifferentialDiffusion, DeepShrink, PerpNeg, PerpNegGuider, DualCFGGuider,
        UNetSelfAttentionMultiply, UNetCrossAttentionMultiply, EpsilonScale,
        # Saving merged and LoRA-baked models (issue 11).
        CheckpointSave,
        # Latent, image and mask operations of ComfyUI's built-ins (issue 11).
        LatentBatch, LatentInterpolate, LatentFlip, LatentRotate, LatentBatchSeedBehavior, LatentConcat, LatentCut,
        ImageScaleToMaxDimension, ImageRotate, ResizeAndPadImage, ImageStitch, ImageAddNoise, GetImageSize,
        CropMask, ImageColorToMask, Morphology, ImageRGBToYUV, ImageYUVToRGB,
        # How diffusion works, shown (issue 18).
        *EXPLAIN_NODES,
    ),
    data_types=DATA_TYPES + EXPLAIN_TYPES,
    importers=(COMFYUI_IMPORTER,),
    devices=DEVICES,
)
