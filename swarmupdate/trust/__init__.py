"""TUF: the publisher-side repository and the agent-side updater driver."""
