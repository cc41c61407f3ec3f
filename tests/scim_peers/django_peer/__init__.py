"""A minimal Django project serving django-scim2-server: a SCIM 2.0 peer for jml's tests."""
