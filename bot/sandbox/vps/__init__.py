"""A stateful fake of the provider's VPS Backups API (`VPS-BACKUPS-API.md`) for tests and the demo.

`Simulator(token, ...)` keeps an account in memory (`state`) and serves it over loopback HTTP
(`wsgi`): time-driven backup completion, random faults (`FaultConfig`), scripted faults
(`Simulator.inject`), and a record of every request. `backupbot simulator` runs it (`cli`).
"""

from bot.sandbox.vps.cli import add_arguments, run_from_args
from bot.sandbox.vps.state import FAILED_BACKUP_ERROR, FaultConfig, RecordedRequest
from bot.sandbox.vps.wsgi import Simulator

__all__ = [
    "FAILED_BACKUP_ERROR",
    "FaultConfig",
    "RecordedRequest",
    "Simulator",
    "add_arguments",
    "run_from_args",
]
