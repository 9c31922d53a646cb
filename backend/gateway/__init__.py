"""The app gateway: Nakama's one HTTP port serving each app at its own address (local mode),
with sign-in, sharing checks, metrics and the zero-downtime switch between app processes."""
