from django.contrib import admin
from django.urls import include, path

from marketdata import views as marketdata_views
from tredye import health, metrics

urlpatterns = [
    path("", marketdata_views.watchlist, name="watchlist"),
    path("trade/<str:symbol>/", marketdata_views.trade, name="trade"),
    path("healthz", health.healthz, name="healthz"),
    path("readyz", health.readyz, name="readyz"),
    path("metrics", metrics.metrics_view, name="metrics"),
    path("metrics/frames", metrics.frames_beacon, name="frames_beacon"),
    path("admin/", admin.site.urls),
    path("accounts/", include("accounts.urls")),
    path("trading/", include("trading.urls")),
    path("marketdata/", include("marketdata.urls")),
]

# The API's errors in JSON (tredye/api.py); pages keep Django's.
handler404 = "tredye.api.page_not_found"
handler500 = "tredye.api.server_error"
