"""Jobs: the record and its lifecycle, the store, the dispatcher that feeds ComfyUI backends,
and the tracker that turns websocket events into progress and outputs. Knows no HTTP routes."""
