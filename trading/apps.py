from django.apps import AppConfig


class TradingConfig(AppConfig):
    name = "trading"
    verbose_name = "Trading"

    def ready(self) -> None:
        from trading import checks, selectors
        from tredye.status import status_check_register

        checks.register()
        status_check_register(selectors.order_queue_degraded)
        # The balances page's settlement and statements section (accounts imports no app).
        from accounts.views import balances_section_register
        from trading.views import balances_section

        balances_section_register(balances_section)
