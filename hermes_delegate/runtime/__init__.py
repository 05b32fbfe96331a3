"""The Delegator, the fan-out, the Worker protocol, the one sync entry, structured output."""
