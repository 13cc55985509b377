"""Built-in probe suites; each module registers its suites with ``probes.suite.register_suite``.

``probes.suite.SUITE_MODULES`` lists the modules imported on first use.
"""
