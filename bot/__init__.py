"""Backup Bot: manage VPS backups from Slack, with approvals and an audit trail."""

__version__ = "0.1.0"
