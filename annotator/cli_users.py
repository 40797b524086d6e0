"""CLI commands for API users: ``users add | list | revoke | token``.

Registered on the ``annotator`` app by :mod:`annotator.cli` (imported at its end). A token is
printed once, when it is made; only its hash is stored.
"""

from __future__ import annotations

from typing import Annotated

import typer
from rich.table import Table

from annotator.cli import app, console, err_console, handle_errors, ready_engine

users_app = typer.Typer(help="API users and their tokens.", no_args_is_help=True)
app.add_typer(users_app, name="users")

ROLE_HELP = "admin, engineer (launches jobs, exports) or reviewer (reads)"


def _print_token(name: str, token: str) -> None:
    err_console.print(
        f"token of {name!r} (shown once; send it as `Authorization: Bearer <token>` or paste "
        "it into the dashboard's login form):",
        highlight=False,
    )
    # Alone on stdout, so `TOKEN=$(annotator users add ...)` works.
    typer.echo(token)


@users_app.command("add")
@handle_errors
def users_add(
    name: Annotated[str, typer.Argument(help="User name.")],
    role: Annotated[str, typer.Option("--role", "-r", help=ROLE_HELP)] = "reviewer",
) -> None:
    """Create a user and print its API token once."""
    from annotator.db.session import session_scope
    from annotator.services.users import add_user

    with session_scope(ready_engine()) as session:
        token = add_user(session, name, role)
    _print_token(name, token)


@users_app.command("token")
@handle_errors
def users_token(name: Annotated[str, typer.Argument(help="User name.")]) -> None:
    """Issue another token for a user (earlier ones stay valid until revoked)."""
    from annotator.db.session import session_scope
    from annotator.services.users import issue_token

    with session_scope(ready_engine()) as session:
        token = issue_token(session, name)
    _print_token(name, token)


@users_app.command("list")
@handle_errors
def users_list() -> None:
    """List users, their role and live tokens."""
    from annotator.db.session import session_scope
    from annotator.services.users import list_users

    with session_scope(ready_engine()) as session:
        rows = list_users(session)
    table = Table("user", "role", "live tokens", "last used")
    for name, role, live, last in rows:
        table.add_row(name, role.value, str(live), last.strftime("%Y-%m-%d %H:%M") if last else "-")
    console.print(table if rows else "no users yet: `annotator users add NAME --role engineer`")


@users_app.command("revoke")
@handle_errors
def users_revoke(name: Annotated[str, typer.Argument(help="User name.")]) -> None:
    """Revoke every token of a user (requests with them get 401 from now on)."""
    from annotator.db.session import session_scope
    from annotator.services.users import revoke_user

    with session_scope(ready_engine()) as session:
        n = revoke_user(session, name)
    console.print(f"revoked {n} token{'s' if n != 1 else ''} of {name!r}")
