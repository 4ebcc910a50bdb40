"""The HTML study report: ``write_report`` and the report folder's name."""

from searchsvc.report.build import REPORT_DIR, write_report

__all__ = ["REPORT_DIR", "write_report"]
