"""The image builder: turns a project's dependency files into something an app can run on.

In cluster mode that is a container image in the registry; in local mode it is a virtualenv per
dependency hash (:mod:`image_builder.environments`), published under the same sortable tag.
"""
