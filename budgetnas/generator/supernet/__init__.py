"""Weight-sharing supernet training and sub-network evaluation for ``ofa-mbv3`` (Once-for-All).

Imports torch; the light parts of the project never import this package.
"""

from __future__ import annotations
