"""Helpers shared by the test modules.

Test modules import from here (and from ``emulators``), never from one another or from
``conftest.py``, which holds only fixtures and hooks:

- ``paths``: where the repository, its examples and the Odibi reference configs are;
  private copies of them
- ``cli``: the venv's console scripts run as a user would run them
- ``runs``: a job run in process, and every error message of a failed run
- ``overlap``: CLI runs of one job at once, and a step where they wait for each other
- ``lake``: two Azurite accounts and a Key Vault secret, ready for a project to use
- ``webserver``: a private dagster-webserver and a small GraphQL client
"""
