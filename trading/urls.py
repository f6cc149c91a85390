from django.urls import path, re_path

from trading import views
from tredye.api import api_not_found

app_name = "trading"
urlpatterns = [
    path("api/orders/", views.orders, name="orders"),
    path("api/orders/cancel-all/", views.cancel_all, name="cancel_all"),
    path("api/orders/<str:order_id>/", views.order_detail, name="order_detail"),
    path("api/orders/<str:order_id>/cancel/", views.order_cancel, name="order_cancel"),
    path("api/orders/<str:order_id>/replace/", views.order_replace, name="order_replace"),
    path("api/trades/", views.trades, name="trades"),
    path("api/positions/", views.positions, name="positions"),
    # last: any other API path is a JSON 404 (tredye.api.api_not_found)
    re_path(r"^api/", api_not_found),
]

# Daily statements (decision 0015): pages of the signed-in trader, not the JSON API.
urlpatterns += [
    path("statements/", views.statements, name="statements"),
    re_path(
        r"^statements/(?P<day>[^/]+)\.(?P<file_format>csv|pdf)$",
        views.statement_download,
        name="statement_download",
    ),
]
