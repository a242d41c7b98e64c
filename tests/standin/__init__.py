"""Tests of the stand-in ComfyUI (comfyui/standin)."""
