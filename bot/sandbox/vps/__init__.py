"""A stateful fake of the provider's VPS Backups API: the account (`state`), served over loopback
HTTP (`wsgi`) by `Simulator`, and the `backupbot simulator` command (`cli`)."""

from bot.sandbox.vps.cli import add_arguments, run_from_args
from bot.sandbox.vps.state import FAILED_BACKUP_ERROR, FaultConfig
from bot.sandbox.vps.wsgi import Simulator

__all__ = ["FAILED_BACKUP_ERROR", "FaultConfig", "Simulator", "add_arguments", "run_from_args"]
