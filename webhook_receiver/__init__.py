"""The webhook receiver: GitLab-format push hooks in, durable events out.

``/build-image`` and ``/code-reload`` check the project's token, store the event and answer at
once; :mod:`webhook_receiver.processing` decides and acts afterwards. The same endpoints serve
the local git server's hooks and, in cluster mode, GitLab's.
"""
