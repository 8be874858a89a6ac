from django.contrib import admin
from django.urls import include, path

from outbound.views import healthz, metrics

urlpatterns = [
    path("admin/", admin.site.urls),
    path("webhooks/", include("webhooks.urls")),
    path("healthz", healthz, name="healthz"),
    path("metrics", metrics, name="metrics"),
]
