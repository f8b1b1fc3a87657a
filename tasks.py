"""Invoke entry point.

Invoke loads this file as the module ``tasks``; giving it the ``tasks/`` folder as its package
path lets ``tasks.collection`` (and the per-collection modules beside it) import as submodules,
while plain Python (pytest) imports ``tasks/`` as the regular package it is.
"""

import os

__path__ = [os.path.join(os.path.dirname(os.path.abspath(__file__)), "tasks")]

from tasks.collection import ns  # noqa: E402, F401
