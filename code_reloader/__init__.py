"""The code reloader: puts a pushed commit into an app's directory without a rebuild.

:mod:`code_reloader.sync` does it the git-sync v4 way (worktree per commit, atomic symlink swap);
:mod:`code_reloader.cli` wraps it as ``nakama reload sync`` for an init container.
"""
