from django.contrib import admin

from accounts.models import Asset


@admin.register(Asset)
class AssetAdmin(admin.ModelAdmin):
    list_display = ["code", "name", "precision"]
    search_fields = ["code", "name"]
