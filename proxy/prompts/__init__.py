"""Prompt tools: a language model (any OpenAI-compatible server) helps write video prompts.

llm.py           the chat completions client (JSON replies, one corrective retry)
instructions.py  the system prompts, written for Wan 2.2 and its UMT5 text encoder
store.py         refinement sessions in the `prompt_sessions` table
service.py       `PromptTools`, what the routes in `proxy.api.prompts` call
"""

from proxy.prompts.service import PromptTools

__all__ = ["PromptTools"]
