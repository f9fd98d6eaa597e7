"""The model side: VLM family adapters, the Universal Visual Codec, VLM agents and RCL.

Modules (import the one you need; this package imports nothing itself, so it stays cheap):
`families` (adapters, chosen by ``model_type``), `codec` (`UniversalVisualCodec`), `latent_io`
(`speak` / `listen`), `vlm_agent` (`VLMAgent`: a VLM on the bus that speaks latents or text),
`pipeline` (`PipelineConfig`, `run_pipeline`: sequential or hierarchical pipelines in latent or
text mode). They need the ``models`` extra.
"""
