from django.apps import AppConfig


class MarketdataConfig(AppConfig):
    name = "marketdata"
    verbose_name = "Market data"

    def ready(self) -> None:
        from django.db.models.signals import post_save

        from marketdata.models import PriceModel
        from marketdata.services import price_model_saved

        post_save.connect(price_model_saved, sender=PriceModel, dispatch_uid="reference_price")
