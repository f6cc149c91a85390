from django.urls import path, re_path

from marketdata import views
from tredye.api import api_not_found

app_name = "marketdata"
urlpatterns = [
    path("api/tickers/", views.tickers, name="tickers"),
    path("api/candles/", views.candles, name="candles"),
    path("api/book/", views.book, name="book"),
    path("api/trades/", views.trades, name="trades"),
    # last: any other API path is a JSON 404 (tredye.api.api_not_found)
    re_path(r"^api/", api_not_found),
]
