from django.apps import AppConfig


class TradingConfig(AppConfig):
    name = "trading"
    verbose_name = "Trading"

    def ready(self) -> None:
        from trading import checks, dead_letters, selectors
        from tredye.status import status_check_register
        from tredye.workers import dead_letter_sink_register

        checks.register()
        status_check_register(selectors.order_queue_degraded)
        dead_letter_sink_register(dead_letters.dead_letter_store)
        # The balances page's settlement and statements section (accounts imports no app).
        from accounts.views import balances_section_register
        from trading.views import balances_section

        balances_section_register(balances_section)
