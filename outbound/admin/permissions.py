"""The read-only permissions of the rows machines own, written once for every admin that shows them."""

from __future__ import annotations

from typing import Any

from django.http import HttpRequest


class ReadOnlyPermissions:
    """Staff may look, never add or edit; nor delete, unless the admin sets `deletable = True`.

    Mixed in before `admin.ModelAdmin` or an inline, whose permission methods it replaces.
    """

    deletable = False

    def has_add_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    def has_delete_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return self.deletable and super().has_delete_permission(request, obj)  # type: ignore[misc]
