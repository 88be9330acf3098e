pytest_plugins = ["tests.helpers.sshd", "tests.helpers.testbed"]
