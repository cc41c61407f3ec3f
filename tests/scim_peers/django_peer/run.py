"""Migrate the sqlite file, then serve with Django's runserver (threaded, no autoreload).

    python -m django_peer.run PORT        (cwd: tests/scim_peers)
"""

from __future__ import annotations

import os
import sys


def main() -> None:
    port = int(sys.argv[1])
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "django_peer.settings")
    import django
    from django.core.management import call_command

    django.setup()
    call_command("migrate", verbosity=0, interactive=False)
    call_command("runserver", f"127.0.0.1:{port}", use_reloader=False, verbosity=0)


if __name__ == "__main__":
    main()
