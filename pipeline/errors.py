"""Typed errors of the engine.

The type of an error decides what happens next: RetryAction retries on
JobError and InfrastructureError only, and every result records the type.
"""


class LavaError(Exception):
    """Base of every error the engine raises on purpose."""

    error_type = "Unknown"


class JobError(LavaError):
    """The job is wrong: bad parameters, a file that does not exist, ..."""

    error_type = "Job"


class InfrastructureError(LavaError):
    """The lab failed: a download server, a board, a worker."""

    error_type = "Infrastructure"


class TestError(LavaError):
    """The test could not be run as asked."""

    __test__ = False  # not a pytest test class
    error_type = "Test"


class ConfigurationError(LavaError):
    """The device configuration is wrong."""

    error_type = "Configuration"


class Canceled(LavaError):
    """The job was cancelled by a user."""

    error_type = "Canceled"


class Bug(LavaError):
    """The dispatcher itself is wrong."""

    error_type = "Bug"
