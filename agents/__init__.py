"""The model side: VLM family adapters, the Universal Visual Codec, VLM agents and RCL.

Empty for now; built by the model-side issues. Importing it needs the ``models`` extra.
"""
