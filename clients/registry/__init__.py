"""Municipal registry client: bulk resident import over mTLS (resumable) and municipality-list checks."""

from clients.registry.importer import ImportReport, import_file, read_rows

__all__ = ["ImportReport", "import_file", "read_rows"]
