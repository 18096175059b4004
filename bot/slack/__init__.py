"""Slack at the edge: the command parser, Bolt listeners and Block Kit builders."""
