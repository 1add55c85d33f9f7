"""Every tunable of rivers, a line each."""

from __future__ import annotations

INFRA_RETRIES = 2  # retries of a step whose worker died, for steps without a retry policy
LOG_FORMAT_ENV = "RIVERS_LOG_FORMAT"  # console | json
LOG_LEVEL_ENV = "RIVERS_LOG_LEVEL"  # DEBUG | INFO | WARNING | ERROR
REDIS_URL_ENV = "RIVERS_REDIS_URL"
SECRET_ENV = "RIVERS_SECRET"
DEFAULT_LOG_LEVEL = "INFO"
