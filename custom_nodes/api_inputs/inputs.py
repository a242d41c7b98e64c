"""The API parameter nodes, written against ComfyUI's classic (V1) node API.

Nothing here imports ComfyUI, torch or PIL at import time: ``folder_paths``, ``nodes`` and
``comfy_api`` are imported inside the functions that need them, so the package also imports
where ComfyUI is absent (the stand-in, tests, tools that read the schemas).
"""

from __future__ import annotations

import os

CATEGORY = "api/inputs"

# The widest range of the number widgets, meaning "no bound". Not sys.maxsize (ComfyUI's
# PrimitiveInt uses it): the graph editor holds widget values as JavaScript doubles and
# writes 9223372036854775807 back as 9223372036854776000, which then fails ComfyUI's own max
# check. 2**53 - 1 (Number.MAX_SAFE_INTEGER) survives that round trip exactly.
WIDE = 2**53 - 1
INT_MIN, INT_MAX = -WIDE, WIDE
FLOAT_MIN, FLOAT_MAX = float(-WIDE), float(WIDE)
# The seed range of ComfyUI's KSampler.
SEED_MAX = 0xFFFFFFFFFFFFFFFF


class ChoiceType(str):
    """The output type of ApiInputChoice: ``"*"`` to the graph editor, a combo to validation.

    A V1 combo input's type is its list of options (KSampler's ``sampler_name``), and ComfyUI
    0.3.64 links a value into it only when ``validate_node_input(received, input_type)``
    (comfy_execution/validation.py) passes. Its first test is ``not received != input_type``;
    everything after it needs two strings, so a plain ``"*"`` or ``"COMBO"`` fails against a
    list. ComfyUI's own ``IO.ANY`` (comfy/comfy_types/node_typing.py) passes by overriding
    ``__ne__``; this type does the same, but only for inputs a string belongs in: combos (a
    list, or a V3 ``"COMBO"``), ``STRING`` and ``"*"``. The editor sees ``"*"`` (the JSON of
    this string) and lets it connect to any input, combo widgets included.
    """

    __slots__ = ()

    def __ne__(self, other: object) -> bool:
        if isinstance(other, (list, tuple)):
            return False
        if isinstance(other, str):
            return not ({t.strip() for t in other.split(",")} & {"*", "COMBO", "STRING"})
        return True

    __hash__ = str.__hash__


CHOICE = ChoiceType("*")


def parse_choices(text: str) -> list[str]:
    """The choices of an ApiInputChoice: one a line, surrounding spaces and blank lines dropped."""
    return [line.strip() for line in text.splitlines() if line.strip()]


def choice_error(choices: str, value: str) -> str | None:
    """Why ``value`` is not an allowed choice, or None when it is."""
    allowed = parse_choices(choices)
    if not allowed:
        return "no choices: write the allowed values in `choices`, one per line"
    if value not in allowed:
        return f"'{value}' is not one of the choices: {', '.join(allowed)}"
    return None


def bounds_error(value: float, low: float | None, high: float | None) -> str | None:
    """Why ``value`` is outside ``[low, high]`` (None: no bound), or None when it is inside."""
    if low is not None and high is not None and low > high:
        return f"min {low} is bigger than max {high}"
    if low is not None and value < low:
        return f"value {value} is smaller than min {low}"
    if high is not None and value > high:
        return f"value {value} is bigger than max {high}"
    return None


def _name(default: str) -> tuple[str, dict]:
    return (
        "STRING",
        {
            "default": default,
            "tooltip": "The API parameter's name: the request field that sets this value "
            "(letters, digits and _).",
        },
    )


_DESCRIPTION = (
    "STRING",
    {"default": "", "tooltip": "What the parameter means, for the API's documentation."},
)


def _input_files(content_type: str) -> list[str]:
    """ComfyUI's input-folder files of one kind, as LoadImage and LoadVideo list them.

    Outside ComfyUI (no ``folder_paths``) there is no input folder: the list is empty, as a
    ComfyUI with an empty input folder reports it.
    """
    try:
        import folder_paths
    except ImportError:
        return []
    input_dir = folder_paths.get_input_directory()
    files = [f for f in os.listdir(input_dir) if os.path.isfile(os.path.join(input_dir, f))]
    return sorted(folder_paths.filter_files_content_types(files, [content_type]))


class ApiInputText:
    """A text parameter."""

    DESCRIPTION = (
        "A text parameter of the API. A request's field `name` replaces `value`; the text "
        "then flows to whatever this output feeds (a prompt, a file prefix)."
    )
    CATEGORY = CATEGORY
    RETURN_TYPES = ("STRING",)
    RETURN_NAMES = ("value",)
    OUTPUT_TOOLTIPS = ("The request's text, or `value` when the request leaves it out.",)
    FUNCTION = "run"

    @classmethod
    def INPUT_TYPES(cls):
        return {
            "required": {
                "name": _name("prompt"),
                "value": (
                    "STRING",
                    {
                        "default": "",
                        "multiline": True,
                        "tooltip": "The default text, used when a request leaves it out.",
                    },
                ),
            },
            "optional": {"description": _DESCRIPTION},
        }

    def run(self, name, value, description=""):
        return (value,)


class ApiInputInt:
    """An integer parameter with optional bounds and step."""

    DESCRIPTION = (
        "An integer parameter of the API. A request's field `name` replaces `value`, within "
        "`min`..`max` (the widest range means no bound) and in steps of `step`."
    )
    CATEGORY = CATEGORY
    RETURN_TYPES = ("INT",)
    RETURN_NAMES = ("value",)
    OUTPUT_TOOLTIPS = ("The request's integer, or `value` when the request leaves it out.",)
    FUNCTION = "run"

    @classmethod
    def INPUT_TYPES(cls):
        wide = {"min": INT_MIN, "max": INT_MAX}
        return {
            "required": {
                "name": _name("value"),
                "value": (
                    "INT",
                    {
                        "default": 0,
                        **wide,
                        "tooltip": "The default integer, used when a request leaves it out.",
                    },
                ),
            },
            "optional": {
                "min": (
                    "INT",
                    {
                        "default": INT_MIN,
                        **wide,
                        "tooltip": "The smallest value a request may set; the default (the "
                        "end of the range) means no lower bound.",
                    },
                ),
                "max": (
                    "INT",
                    {
                        "default": INT_MAX,
                        **wide,
                        "tooltip": "The largest value a request may set; the default (the "
                        "end of the range) means no upper bound.",
                    },
                ),
                "step": (
                    "INT",
                    {
                        "default": 1,
                        "min": 1,
                        "max": INT_MAX,
                        "tooltip": "A request's value must be a multiple of this step away "
                        "from min (32 for a width); 1 allows every integer.",
                    },
                ),
                "description": _DESCRIPTION,
            },
        }

    @classmethod
    def VALIDATE_INPUTS(cls, value=None, min=None, max=None):
        # A linked input arrives as None: it is checked when the node runs.
        if value is None:
            return True
        return bounds_error(value, min, max) or True

    def run(self, name, value, min=None, max=None, step=1, description=""):
        error = bounds_error(value, min, max)
        if error is not None:
            raise ValueError(f"{type(self).__name__} '{name}': {error}")
        return (value,)


class ApiInputFloat:
    """A number parameter with optional bounds and step."""

    DESCRIPTION = (
        "A number parameter of the API. A request's field `name` replaces `value`, within "
        "`min`..`max` (the widest range means no bound) and in steps of `step`."
    )
    CATEGORY = CATEGORY
    RETURN_TYPES = ("FLOAT",)
    RETURN_NAMES = ("value",)
    OUTPUT_TOOLTIPS = ("The request's number, or `value` when the request leaves it out.",)
    FUNCTION = "run"

    @classmethod
    def INPUT_TYPES(cls):
        # round False: the widget keeps what the author types instead of rounding to `step`.
        wide = {"min": FLOAT_MIN, "max": FLOAT_MAX, "step": 0.01, "round": False}
        return {
            "required": {
                "name": _name("value"),
                "value": (
                    "FLOAT",
                    {
                        "default": 0.0,
                        **wide,
                        "tooltip": "The default number, used when a request leaves it out.",
                    },
                ),
            },
            "optional": {
                "min": (
                    "FLOAT",
                    {
                        "default": FLOAT_MIN,
                        **wide,
                        "tooltip": "The smallest value a request may set; the default (the "
                        "end of the range) means no lower bound.",
                    },
                ),
                "max": (
                    "FLOAT",
                    {
                        "default": FLOAT_MAX,
                        **wide,
                        "tooltip": "The largest value a request may set; the default (the "
                        "end of the range) means no upper bound.",
                    },
                ),
                "step": (
                    "FLOAT",
                    {
                        "default": 0.01,
                        "min": 0.0,
                        "max": FLOAT_MAX,
                        "step": 0.01,
                        "round": False,
                        "tooltip": "The step between the values a request may set; 0 allows "
                        "any number.",
                    },
                ),
                "description": _DESCRIPTION,
            },
        }

    @classmethod
    def VALIDATE_INPUTS(cls, value=None, min=None, max=None):
        if value is None:
            return True
        return bounds_error(value, min, max) or True

    def run(self, name, value, min=None, max=None, step=0.01, description=""):
        error = bounds_error(value, min, max)
        if error is not None:
            raise ValueError(f"{type(self).__name__} '{name}': {error}")
        return (value,)


class ApiInputBool:
    """A true/false parameter."""

    DESCRIPTION = "A true/false parameter of the API. A request's field `name` replaces `value`."
    CATEGORY = CATEGORY
    RETURN_TYPES = ("BOOLEAN",)
    RETURN_NAMES = ("value",)
    OUTPUT_TOOLTIPS = ("The request's true/false, or `value` when the request leaves it out.",)
    FUNCTION = "run"

    @classmethod
    def INPUT_TYPES(cls):
        return {
            "required": {
                "name": _name("enabled"),
                "value": (
                    "BOOLEAN",
                    {
                        "default": False,
                        "tooltip": "The default, used when a request leaves it out.",
                    },
                ),
            },
            "optional": {"description": _DESCRIPTION},
        }

    def run(self, name, value, description=""):
        return (value,)


class ApiInputSeed:
    """A seed parameter: random when a request leaves it out."""

    DESCRIPTION = (
        "A seed parameter of the API. A request's field `name` replaces `value`; a request "
        "that leaves it out gets a seed drawn at random, so every run differs."
    )
    CATEGORY = CATEGORY
    RETURN_TYPES = ("INT",)
    RETURN_NAMES = ("seed",)
    OUTPUT_TOOLTIPS = ("The request's seed, or a random one when the request leaves it out.",)
    FUNCTION = "run"

    @classmethod
    def INPUT_TYPES(cls):
        return {
            "required": {
                "name": _name("seed"),
                "value": (
                    "INT",
                    {
                        "default": 0,
                        "min": 0,
                        "max": SEED_MAX,
                        "control_after_generate": True,
                        "tooltip": "The seed of runs queued from the graph editor; an API "
                        "request that leaves it out gets a random one.",
                    },
                ),
            },
            "optional": {"description": _DESCRIPTION},
        }

    def run(self, name, value, description=""):
        return (value,)


class ApiInputChoice:
    """A parameter with a fixed set of allowed values, pluggable into any combo input."""

    DESCRIPTION = (
        "A choice parameter of the API: one of the lines of `choices`. A request's field "
        "`name` replaces `value`. The output plugs into any combo input (a sampler name, a "
        "scheduler) and into text inputs."
    )
    CATEGORY = CATEGORY
    RETURN_TYPES = (CHOICE,)
    RETURN_NAMES = ("value",)
    OUTPUT_TOOLTIPS = ("The chosen value (one of the lines of `choices`).",)
    FUNCTION = "run"

    @classmethod
    def INPUT_TYPES(cls):
        return {
            "required": {
                "name": _name("choice"),
                "choices": (
                    "STRING",
                    {
                        "default": "",
                        "multiline": True,
                        "tooltip": "The allowed values, one per line.",
                    },
                ),
                "value": (
                    "STRING",
                    {
                        "default": "",
                        "tooltip": "The default choice (one of the lines of `choices`), used "
                        "when a request leaves it out.",
                    },
                ),
            },
            "optional": {"description": _DESCRIPTION},
        }

    @classmethod
    def VALIDATE_INPUTS(cls, choices=None, value=None):
        if choices is None or value is None:
            return True
        return choice_error(choices, value) or True

    def run(self, name, choices, value, description=""):
        error = choice_error(choices, value)
        if error is not None:
            raise ValueError(f"{type(self).__name__} '{name}': {error}")
        return (value,)


class ApiInputImage:
    """An image parameter: a file of ComfyUI's input folder, loaded as LoadImage loads it."""

    DESCRIPTION = (
        "An image parameter of the API. A request uploads its own image, which replaces "
        "`image`; the image and its mask come out as from Load Image."
    )
    CATEGORY = CATEGORY
    RETURN_TYPES = ("IMAGE", "MASK")
    RETURN_NAMES = ("image", "mask")
    OUTPUT_TOOLTIPS = ("The image.", "Its alpha channel as a mask (empty without alpha).")
    FUNCTION = "run"

    @classmethod
    def INPUT_TYPES(cls):
        return {
            "required": {
                "name": _name("image"),
                # Named `image`: the editor's upload button and preview look for that name.
                "image": (
                    _input_files("image"),
                    {
                        "image_upload": True,
                        "tooltip": "The default image, from ComfyUI's input folder (upload "
                        "one with the button); a request may send its own.",
                    },
                ),
            },
            "optional": {"description": _DESCRIPTION},
        }

    @classmethod
    def IS_CHANGED(cls, image, **_others):
        import nodes

        return nodes.LoadImage.IS_CHANGED(image)

    @classmethod
    def VALIDATE_INPUTS(cls, image=None):
        # In the signature, so the combo check gives way to this one (as in LoadImage):
        # subfolders and "name [output]" are accepted.
        if image is None:
            return True
        import nodes

        return nodes.LoadImage.VALIDATE_INPUTS(image)

    def run(self, name, image, description=""):
        import nodes

        return nodes.LoadImage().load_image(image)


class ApiInputVideo:
    """A video parameter: a file of ComfyUI's input folder, loaded as LoadVideo loads it."""

    DESCRIPTION = (
        "A video parameter of the API. A request uploads its own video, which replaces "
        "`file`; the video comes out as from Load Video."
    )
    CATEGORY = CATEGORY
    RETURN_TYPES = ("VIDEO",)
    RETURN_NAMES = ("video",)
    OUTPUT_TOOLTIPS = ("The video, read from the file when a node asks for its frames.",)
    FUNCTION = "run"

    @classmethod
    def INPUT_TYPES(cls):
        return {
            "required": {
                "name": _name("video"),
                # Named `file`, like LoadVideo's, for the editor's upload widget.
                "file": (
                    _input_files("video"),
                    {
                        "video_upload": True,
                        "tooltip": "The default video, from ComfyUI's input folder (upload "
                        "one with the button); a request may send its own.",
                    },
                ),
            },
            "optional": {"description": _DESCRIPTION},
        }

    @classmethod
    def IS_CHANGED(cls, file, **_others):
        # LoadVideo's fingerprint: the modification time (hashing a video is slow).
        import folder_paths

        return os.path.getmtime(folder_paths.get_annotated_filepath(file))

    @classmethod
    def VALIDATE_INPUTS(cls, file=None):
        if file is None:
            return True
        import folder_paths

        if not folder_paths.exists_annotated_filepath(file):
            return f"Invalid video file: {file}"
        return True

    def run(self, name, file, description=""):
        import folder_paths

        try:
            from comfy_api.latest import InputImpl

            video_from_file = InputImpl.VideoFromFile
        except ImportError:  # ComfyUI before comfy_api.latest
            from comfy_api.input_impl import VideoFromFile as video_from_file

        return (video_from_file(folder_paths.get_annotated_filepath(file)),)


NODE_CLASSES = (
    ApiInputText,
    ApiInputInt,
    ApiInputFloat,
    ApiInputBool,
    ApiInputSeed,
    ApiInputChoice,
    ApiInputImage,
    ApiInputVideo,
)
