"""``get_config`` of the serializable layers and losses, from the names of their arguments.

Keras rebuilds a saved layer or loss by passing its ``get_config()`` to the constructor, so
the configuration must hold every constructor argument under its own name. The classes of
:mod:`net.layers` and :mod:`net.losses` keep each argument, validated, in the attribute of the
same name; their configuration is the Keras base class's plus those attributes, which
`AttributeConfig` builds from one tuple of names.
"""

from __future__ import annotations

from typing import Any


class AttributeConfig:
    """Mixin (before the Keras base class): ``get_config`` adds the ``config_attributes``.

    Example::

        class L2Normalization(AttributeConfig, keras.layers.Layer):
            config_attributes = ("axis", "epsilon")  # stored as self.axis, self.epsilon
    """

    #: Constructor arguments that the instance keeps as attributes of the same name.
    config_attributes: tuple[str, ...] = ()

    def get_config(self) -> dict[str, Any]:
        config = super().get_config()  # type: ignore[misc]  # the Keras base class's
        config.update((name, getattr(self, name)) for name in self.config_attributes)
        return config
