"""Local mode's adapters: git repositories on disk, environments as virtualenvs, apps as
supervised processes and an in-process job runner. A real product mode, not a test double."""
