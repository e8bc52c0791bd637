"""One small error hierarchy: permanent errors fail a job, retryable ones back off."""


class MedsegError(Exception):
    """Base of every error medseg raises on purpose."""


class PermanentError(MedsegError):
    """Retrying cannot help (bad input, no model for the series): the job fails at once."""


class InputError(PermanentError):
    """The series cannot be processed as received (missing geometry, wrong modality, ...)."""


class SkippedError(PermanentError):
    """The series is not for us (not an image, no model for it, a 2D series for a model that
    needs a volume): nothing is wrong with it, and the job ends ``skipped`` with this reason."""


class NothingFoundError(SkippedError):
    """The model ran and the series holds nothing it measures (no fetal head in any frame):
    an answer, not a fault of the input or the service. ``medseg process`` reports it as
    ``no_finding`` (exit code 0); a job ends ``skipped`` with the reason."""


class NoModelError(SkippedError):
    """No registered model accepts the series."""


class DataLayoutError(MedsegError, ValueError):
    """A training or evaluation folder is not laid out as the command reads it; the message
    says what it expected."""


class RetryableError(MedsegError):
    """A passing condition (a service down, a full disk): try again later."""
