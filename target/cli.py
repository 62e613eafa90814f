"""The `ringtgt` command line: serve, check-config, --version."""
import argparse
import logging
import os
import sys
from importlib.metadata import version

from target.config import Config, ConfigError, dump_config, load_config
from target.supervisor import Supervisor

LOG_FORMAT = "%(asctime)s %(name)s[%(process)d] %(levelname)s: %(message)s"


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    try:
        config = load_config(args.config)
    except ConfigError as e:
        print(f"ringtgt: config error: {e}", file=sys.stderr)
        return 2
    return args.command(config)


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="ringtgt", description="High-throughput iSCSI target on io_uring.")
    parser.add_argument("--version", action=_Version, nargs=0, help="show the version and exit")
    commands = parser.add_subparsers(title="commands", required=True, metavar="COMMAND")
    for name, func, text in (
        ("serve", _serve, "run the target: a supervisor, the node's coordinator and one worker per CPU"),
        ("check-config", _check_config, "validate the configuration and print it resolved, as TOML"),
    ):
        command = commands.add_parser(name, help=text, description=text)
        command.add_argument("--config", metavar="FILE", help="TOML configuration (default: the embedded one)")
        command.set_defaults(command=func)
    return parser


class _Version(argparse.Action):
    """--version, looked up from the installed package only when asked for."""

    def __call__(self, parser, namespace, values, option_string=None):
        parser.exit(message=f"ringtgt {version('ringtgt')}\n")


def _serve(config: Config) -> int:
    from coordinator.main import coordinator_main
    from target.worker import worker_main  # here: it needs the compiled ring, check-config does not

    logging.basicConfig(level=config.server.log_level.upper(), format=LOG_FORMAT)
    os.makedirs(config.server.state_dir, exist_ok=True)
    return Supervisor(config, worker_main, coordinator_main).run()


def _check_config(config: Config) -> int:
    sys.stdout.write(dump_config(config))
    return 0
