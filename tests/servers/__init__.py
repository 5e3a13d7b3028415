"""Third-party model servers for tests: built once into cached virtual environments, run on
127.0.0.1 with ephemeral ports. Shared by every test that needs a real peer."""
