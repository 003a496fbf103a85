"""Show: plots and a self-contained HTML report."""

from .html import headline, write_report

__all__ = ["headline", "write_report"]
