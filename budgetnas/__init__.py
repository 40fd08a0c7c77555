"""budgetnas: latency LUTs measured on real hardware and budget-conditioned architecture generation.

This package holds the CLI and the project-wide exception tree (``budgetnas.core.errors``), a leaf
module with no project imports that every other package may use.
"""

__version__ = "0.1.0"
