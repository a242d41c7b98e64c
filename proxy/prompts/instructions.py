"""System prompts for the prompt tools, and the user messages that go with them.

Written for Wan 2.2 (TI2V 5B, as FastWAN runs it): one continuous shot of a few seconds,
read by a UMT5-XXL text encoder that uses about 512 tokens and does best with one plain
English paragraph of concrete description. Every instruction ends with the exact JSON shape
we validate against in `proxy.prompts.service`.
"""

from __future__ import annotations

import json
from typing import Any

from proxy.prompts.llm import Message

# What the validators allow; the guide asks for less so that a slightly long reply still fits.
TARGET_WORDS = 120
MAX_PROMPT_WORDS = 200

GUIDE = f"""\
You write prompts for Wan 2.2, a text-to-video model. Each prompt becomes one continuous \
shot about five seconds long. Its text encoder reads plain descriptive English and only \
uses the first few hundred words, so a good prompt is a single paragraph of 40 to \
{TARGET_WORDS} words.

A good prompt tells the model, in flowing sentences:
- the subject: who or what is on screen, with visible details such as age, build, clothing, \
fur or material, colour and size;
- the action: one clear movement that can happen within a few seconds, with active verbs;
- the scene: where it happens, foreground and background, props, weather, season;
- the light: its source, direction and quality, the time of day, warm or cool colour;
- the camera: shot size (close-up, medium, wide), angle, and one movement such as a slow \
push in, a pan, a tracking shot, an orbit, or a locked-off tripod;
- the style: for example photorealistic footage, 35mm film with grain, anime, claymation, \
watercolour, or a 3D render, plus the mood it should carry.

Rules for every prompt you write:
- One paragraph of sentences. No bullet points, headings, hashtags, quotation marks around \
the prompt, or weights such as (word:1.3).
- Describe what is there, never what is absent: write "an empty beach" rather than a \
sentence that names people in order to exclude them, because the encoder picks up the \
excluded word.
- Prefer concrete nouns and verbs the model can draw over praise words such as stunning, \
epic or masterpiece.
- One shot, one moment: no cuts, no "later", no story that needs more than a few seconds.
- Leave out written words, captions, logos and readable signs unless the user asks for \
them; video models render lettering badly.
- Keep every detail the user asked for, and do not swap the subject or invent a different \
story.
"""

_JSON_ONLY = (
    "Reply with a single JSON object and nothing else: no explanation before or after it and "
    "no code fences. Use exactly this shape:"
)

INITIALIZE = f"""\
{GUIDE}
Your task now: read the user's video prompt and break it down into parameters, the \
separate visual decisions it makes, so they can be edited one at a time later.

Use short snake_case keys. Prefer these when they apply: subject, action, scene, \
time_of_day, lighting, weather, camera, style, mood, colors. Add other keys for anything \
else the prompt decides that changes the picture. Values are short phrases; colors is a list \
of colour words. Only record what the prompt states or clearly implies; leave out keys it \
says nothing about.

{_JSON_ONLY}
{{"parameters": {{"subject": "...", "action": "...", "colors": ["...", "..."]}}}}
"""

UPDATE = f"""\
{GUIDE}
Your task now: the user is refining a video prompt step by step. You receive the current \
prompt, its parameters, and a request in the user's own words. Apply the request: change \
what it asks for and keep everything else as it is. Then rewrite the whole prompt so it \
reads as one natural paragraph that follows the rules above.

Return the complete parameters after the change (every key, not only the changed ones), the \
rewritten prompt, "changes": one short past-tense sentence per change (for example \
"Added heavy rain" or "Moved the camera to a low angle"), and "summary": a label of at most \
six words for the history list.

{_JSON_ONLY}
{{"parameters": {{"...": "..."}}, "prompt": "...", "changes": ["..."], "summary": "..."}}
"""

ENHANCE = f"""\
{GUIDE}
Your task now: the user gives a rough idea, often only a few words. Turn it into one \
finished prompt that follows the rules above. Keep the idea and everything the user named; \
fill in what the video model needs to know (subject details, action, setting, light, \
camera, style) with choices that suit the idea.

{_JSON_ONLY}
{{"enhanced_prompt": "..."}}
"""

VARIATIONS = f"""\
{GUIDE}
Your task now: the user liked one or more prompts and wants new ones in the same spirit. \
Write exactly the number of prompts asked for. Each one keeps the core subject of the \
prompts it comes from but changes something visible: setting, time of day, weather, light, \
camera movement, style or mood. Every prompt must stand on its own and follow the rules \
above, and no two may be near copies of each other or of the originals.

{_JSON_ONLY}
{{"prompts": ["...", "..."]}}
"""

SCENES = f"""\
{GUIDE}
Your task now: plan a short video made of separate clips, one per named scene, in the order \
given. Each clip is generated on its own by the video model and the clips are joined \
afterwards, so each description is a complete prompt that follows the rules above. A \
person, product or place that appears in more than one scene must be described with the \
same identifying details (appearance, clothing, colours, materials) every time, or it will \
look different from clip to clip. Keep the style, palette and light consistent across \
scenes unless the brief asks for a change.

Scene names often follow a short advertisement: "hook" opens with a striking image that \
makes the viewer stop; "problem" shows the situation or frustration the brief is about; \
"solution" shows the product or idea resolving it; "cta" is the closing shot that invites \
the viewer to act, told through images. For other names, read the name and the brief.

{_JSON_ONLY}
{{"scenes": [{{"scenario": "<scene name, exactly as given>", "description": "..."}}]}}
"""


def _system(text: str) -> Message:
    return {"role": "system", "content": text}


def _user(text: str) -> Message:
    return {"role": "user", "content": text}


def _dump(value: Any) -> str:
    return json.dumps(value, ensure_ascii=False, indent=2)


def initialize_messages(prompt: str) -> list[Message]:
    return [_system(INITIALIZE), _user(f"Video prompt:\n{prompt}")]


def update_messages(prompt: str, parameters: dict[str, Any], request: str) -> list[Message]:
    return [
        _system(UPDATE),
        _user(
            f"Current prompt:\n{prompt}\n\nCurrent parameters:\n{_dump(parameters)}\n\n"
            f"Request:\n{request}"
        ),
    ]


def enhance_messages(rough_prompt: str) -> list[Message]:
    return [_system(ENHANCE), _user(f"Rough idea:\n{rough_prompt}")]


def variations_messages(prompts: list[str], count: int) -> list[Message]:
    listed = "\n".join(f"{n}. {p}" for n, p in enumerate(prompts, start=1))
    noun = "prompt" if count == 1 else "prompts"
    return [
        _system(VARIATIONS),
        _user(f"Prompts the user selected:\n{listed}\n\nWrite {count} new {noun}."),
    ]


def scenes_messages(brief: str, scenarios: list[str]) -> list[Message]:
    names = ", ".join(f'"{name}"' for name in scenarios)
    return [
        _system(SCENES),
        _user(f"Brief:\n{brief}\n\nScenes, in order ({len(scenarios)}): {names}"),
    ]
