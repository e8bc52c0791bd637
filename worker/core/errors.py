"""One small error hierarchy: permanent errors fail a job, retryable ones back off."""


class MedsegError(Exception):
    """Base of every error medseg raises on purpose."""


class PermanentError(MedsegError):
    """Retrying cannot help (bad input, no model for the series): the job fails at once."""


class InputError(PermanentError):
    """The series cannot be processed as received (missing geometry, wrong modality, ...)."""


class NoModelError(PermanentError):
    """No registered model accepts the series."""


class RetryableError(MedsegError):
    """A passing condition (a service down, a full disk): try again later."""
