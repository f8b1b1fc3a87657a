"""The CGD descriptor alphabet: one letter per global descriptor, and the check of a string.

A descriptor string such as ``"SG"`` names the global descriptors of a CGD head in order (the
first also feeds the auxiliary classification head). Letters are case-insensitive. This module
imports nothing heavy, so the configuration checks descriptor strings without TensorFlow.
"""

from __future__ import annotations

#: Descriptor letter -> layer name: S = SPoC (mean), M = MAC (max), G = GeM (generalized mean).
DESCRIPTOR_NAMES: dict[str, str] = {"S": "spoc", "M": "mac", "G": "gem"}


def parse_descriptors(descriptors: str) -> tuple[str, ...]:
    """Validates a CGD descriptor string.

    Args:
        descriptors: Letters S (SPoC), M (MAC), G (GeM) in any case, e.g. "SG"; order matters
            (the first descriptor feeds the auxiliary head).

    Returns:
        The upper-case letters in order, e.g. ("S", "G").

    Raises:
        ValueError: If the string is empty or not a string, holds an unknown letter, or repeats
            a descriptor.
    """
    if not isinstance(descriptors, str) or not descriptors:
        raise ValueError(
            f"must be a non-empty string of descriptor letters S, M, G, got {descriptors!r}"
        )
    letters = tuple(descriptors.upper())
    unknown = sorted({c for c in descriptors if c.upper() not in DESCRIPTOR_NAMES})
    if unknown:
        raise ValueError(
            f"{descriptors!r} has {', '.join(map(repr, unknown))}; allowed letters are "
            "S (SPoC), M (MAC) and G (GeM)"
        )
    if len(set(letters)) != len(letters):
        raise ValueError(f"{descriptors!r}: a descriptor is repeated")
    return letters
