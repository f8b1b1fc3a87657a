"""The test suite and static analysis (what CI runs)."""

from invoke import task


@task(help={"args": "extra pytest arguments, e.g. '-k losses -x'"})
def unit_tests(c, args=""):
    """Run the unit and end-to-end tests with pytest."""
    c.run(f"python -m pytest {args}", pty=False)


@task
def static_code_analysis(c):
    """Lint (ruff check) and check formatting (ruff format --check) of the whole repository."""
    c.run("ruff check .", pty=False)
    c.run("ruff format --check .", pty=False)
