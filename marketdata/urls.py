from django.urls import path

from marketdata import views

app_name = "marketdata"
urlpatterns = [
    path("api/tickers/", views.tickers, name="tickers"),
]
