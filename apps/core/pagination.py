"""Paging for every list endpoint: `?limit=` (clamped to MAX_PAGE_SIZE) and `?offset=` (bounded).

DRF's default quietly falls back to the first page for `?limit=abc` or `?offset=-5`; here such a
request is refused with a 400 naming the parameter, as the OpenAPI schema says.
"""

from rest_framework.pagination import LimitOffsetPagination

from apps.core.limits import MAX_OFFSET, MAX_PAGE_SIZE
from apps.core.query_params import query_integer


class BoundedLimitOffsetPagination(LimitOffsetPagination):
    max_limit = MAX_PAGE_SIZE
    max_offset = MAX_OFFSET

    def get_limit(self, request):
        return query_integer(
            request, self.limit_query_param, default=self.default_limit, minimum=1, maximum=self.max_limit, clamp=True
        )

    def get_offset(self, request):
        return query_integer(request, self.offset_query_param, default=0, minimum=0, maximum=self.max_offset)

    def paginate_queryset(self, queryset, request, view=None):
        # Both are checked before counting, so a bad offset costs no query.
        self.get_offset(request)
        return super().paginate_queryset(queryset, request, view)

    def get_schema_operation_parameters(self, view):
        return [
            {
                "name": self.limit_query_param,
                "required": False,
                "in": "query",
                "description": f"Results per page (default {self.default_limit}); values above "
                f"{self.max_limit} are clamped to {self.max_limit}.",
                "schema": {"type": "integer", "minimum": 1},
            },
            {
                "name": self.offset_query_param,
                "required": False,
                "in": "query",
                "description": "Index of the first result to return.",
                "schema": {"type": "integer", "minimum": 0, "maximum": self.max_offset},
            },
        ]
