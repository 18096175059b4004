"""What the demo and the tests fake: the VPS provider, Slack's Web API, signed requests."""
