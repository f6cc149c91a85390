from django.conf import settings
from django.http import HttpRequest


def platform(request: HttpRequest) -> dict:
    """Values every page's client needs: where the stream is and how it behaves."""
    return {
        "ws_path": "/ws/stream/",
        "stale_after_s": settings.STREAM_STALE_AFTER_S,
    }
