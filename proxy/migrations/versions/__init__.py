"""Alembic revisions, one file each (a package only so that it ships with `proxy`; Alembic
itself reads these files by path and skips this one)."""
