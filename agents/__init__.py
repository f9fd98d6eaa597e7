"""The model side: VLM family adapters, the Universal Visual Codec and VLM agents.

Modules (import the one you need; this package imports nothing itself, so it stays cheap):
`families` (adapters, chosen by ``model_type``), `codec` (`UniversalVisualCodec`), `latent_io`
(`speak` / `listen`), `vlm_agent` (`VLMAgent`: a VLM on the bus that speaks latents or text),
`pipeline` (`PipelineConfig`, `run_pipeline`: sequential or hierarchical pipelines in latent or
text mode), `demo` (the VLM demo of `latentwire demo`), `errors` (the model side's error tree).
They need the ``models`` extra. RCL is not built yet.
"""
