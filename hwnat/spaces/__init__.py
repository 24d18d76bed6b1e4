"""Search spaces, registered by name: ``get_space("ofa-mbv3")``, ``list_spaces()``."""

from hwnat.spaces._base import BlockSpec, SearchSpace
from hwnat.spaces._registry import get_space, list_spaces, register_space

# importing the families registers them (they import torch lazily, only to build models)
from hwnat.spaces import fbnet, mtl, nasbench201, ofa_mbv3  # noqa: E402,F401  isort: skip

__all__ = ["BlockSpec", "SearchSpace", "get_space", "list_spaces", "register_space"]
