"""FastWAN proxy: a durable async API in front of ComfyUI for video generation."""

__version__ = "0.1.0"
