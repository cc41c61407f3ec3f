"""The package's own URLconf under /scim/v2/ (its resource 'location' URLs assume that prefix)."""

from __future__ import annotations

from django.urls import include, path

urlpatterns = [path("scim/v2/", include("django_scim2_server.urls"))]
