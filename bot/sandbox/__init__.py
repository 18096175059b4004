"""The sandbox: fakes of the VPS provider and of Slack, which the demo and the tests use."""
