"""The test suite's settings: production settings, plus the hosts the tests send PagerDuty requests to.

`https://pd.test` is what `responses` answers for in unit tests; the local stand-in listens on
loopback. pytest-django exports DJANGO_SETTINGS_MODULE, so worker processes started by the
integration tests read these settings too.
"""

from config.settings import *  # noqa: F403
from config.settings import PAGERDUTY_ALLOWED_HOSTS

PAGERDUTY_ALLOWED_HOSTS = [*PAGERDUTY_ALLOWED_HOSTS, "pd.test", "pd.seed.test", "127.0.0.1", "localhost"]
