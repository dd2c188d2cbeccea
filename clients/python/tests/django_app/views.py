"""Views of the test Django project: DRF and plain Django views that fail in known ways."""

from django.http import HttpRequest, HttpResponse
from rest_framework import exceptions, serializers
from rest_framework.permissions import IsAuthenticated
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView


class PaymentGatewayError(Exception):
    """What the shop's payment code raises when the provider is down."""


def charge_card(order_id: int) -> None:
    raise PaymentGatewayError(f"card declined by gateway for order {order_id}: upstream 502")


class ChargeOrder(APIView):
    permission_classes = [IsAuthenticated]

    def post(self, request: Request, order_id: int) -> Response:
        charge_card(order_id)
        return Response({"ok": True})


class QuantitySerializer(serializers.Serializer):
    quantity = serializers.IntegerField(min_value=1)


class UpdateCart(APIView):
    def post(self, request: Request) -> Response:
        s = QuantitySerializer(data=request.data)
        s.is_valid(raise_exception=True)  # a 400, not worth an alert
        return Response(s.validated_data)


class InventoryUnavailable(exceptions.APIException):
    status_code = 503
    default_detail = "inventory service unavailable"
    default_code = "inventory_unavailable"


class Inventory(APIView):
    def get(self, request: Request) -> Response:
        raise InventoryUnavailable()


def legacy_report(request: HttpRequest) -> HttpResponse:
    totals = {"north": 10}
    return HttpResponse(str(totals["south"]))  # KeyError in a plain Django view
