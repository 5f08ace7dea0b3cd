import os

from django.core.wsgi import get_wsgi_application

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "omiportal.settings")
application = get_wsgi_application()

# gunicorn runs no system checks (manage.py commands do): without this, a production server
# with console email or a host-local database would start and serve.
from omiportal.checks import refuse_to_start_on_errors  # noqa: E402  (needs the apps loaded above)

refuse_to_start_on_errors()
