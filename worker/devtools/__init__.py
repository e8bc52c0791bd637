"""The demo and the local stack (Redis, gateway, worker on free ports) it and the tests run."""
