"""The one exception the marks raise."""

from __future__ import annotations


class MarkError(ValueError):
    """The graph's marks, or its sidecar, do not make a workflow; one line per problem."""

    def __init__(self, problems: list[str]) -> None:
        super().__init__("; ".join(problems))
        self.problems = problems
