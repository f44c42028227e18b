"""``python -m bench`` (``make bench``): the performance benchmark of the API on this machine.

Dev tooling, not shipped in the wheel. See docs/performance.md for what it measures and why.
"""
