"""Tables, plots and image grids."""

from .grids import poison_grid
from .tables import format_table, result_table, transfer_table

__all__ = ["format_table", "poison_grid", "result_table", "transfer_table"]
