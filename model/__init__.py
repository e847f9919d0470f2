"""Step-Video-T2V in plain PyTorch: DiT, Video-VAE v2, text encoders, flow-matching sampler, checkpoints, pipeline.

No Django here. Entry points: ``model.presets.get_preset``, ``model.pipeline.StepVideoPipeline``,
``model.checkpoint.{load_dit, save_dit}``, ``python -m model {info, make-tiny}``.
"""
