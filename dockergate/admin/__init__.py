"""Admin operations on the engine a gate fronts: purge a user's objects, usage per user.

Written once on the gate's async daemon client and used by both the CLI (which
talks to the daemon, or to a remote gate's admin API) and the gate's own
``/_dockergate/...`` admin API.
"""
