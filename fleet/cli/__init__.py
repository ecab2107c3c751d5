"""The ``fleet`` command (Typer). ``main`` is the console-script entry point."""

from __future__ import annotations

import sys

from fleet.domain.errors import ConfigError, FleetError, InvalidInput


def main(argv: list[str] | None = None) -> int:
    from fleet.cli.root import app
    from fleet.cli.sim import implicit_run

    argv = implicit_run(list(sys.argv[1:] if argv is None else argv))
    try:
        # Standalone mode prints usage errors itself and exits via SystemExit;
        # our own errors pass through it and are reported here, without a traceback.
        app(args=argv, prog_name="fleet", standalone_mode=True)
    except SystemExit as exc:
        return exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
    except ConfigError as exc:
        print("fleet: configuration error:", file=sys.stderr)
        for p in exc.problems:
            print(f"  - {p}", file=sys.stderr)
        return 2
    except InvalidInput as exc:
        print(f"fleet: {exc.message}", file=sys.stderr)
        return 2
    except FleetError as exc:
        print(f"fleet: {exc.message}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130
    return 0
