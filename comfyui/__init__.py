"""The ComfyUI side of the project: the model manifest and the stand-in (`comfyui.standin`)."""
