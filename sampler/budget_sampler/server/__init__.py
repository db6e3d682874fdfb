"""The OpenAI-compatible server: protocol.py (the wire format), engine_loop.py (the thread that
owns the engine), app.py (the FastAPI routes). `budget-sampler serve` starts it."""
