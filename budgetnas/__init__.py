"""budgetnas: latency LUTs measured on real hardware and budget-conditioned architecture generation.

The one top-level package of the distribution; what each subpackage owns and may import is the
table of docs/layout.md (checked by tools/import_contracts.py). Kept tiny: importing any subpackage
runs this file.
"""

__version__ = "0.1.0"
