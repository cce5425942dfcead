"""The methods of the engine, one module each: ``<kind>/<method>.py``.

A method module holds a block's model (its keys, their types and checks),
its strategy and its actions; what several methods share is in common/.
Nothing in the engine's core imports this package: pipeline.builtin
registers the built-in methods (see docs/engine.md).
"""
