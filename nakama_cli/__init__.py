"""The ``nakama`` command: the client commands that talk to a Nakama's API (projects, users,
variables, sharing, sign-in), ``nakama up``, and the job entry points the CI templates and the
init container call (``nakama build``, ``nakama reload …``, ``nakama flux …``,
``nakama cluster setup …``). It sits on top of everything else and nothing imports it."""
