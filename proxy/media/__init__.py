"""Stored outputs: fetching them from ComfyUI, probing, serving with Range, zips."""
