from django.contrib import admin
from django.urls import include, path

from outbound.views import healthz

urlpatterns = [
    path("admin/", admin.site.urls),
    path("webhooks/", include("webhooks.urls")),
    path("healthz", healthz, name="healthz"),
]
