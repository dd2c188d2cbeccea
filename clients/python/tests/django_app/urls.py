from django.urls import path

from . import views

urlpatterns = [
    path("api/orders/<int:order_id>/charge/", views.ChargeOrder.as_view()),
    path("api/cart/", views.UpdateCart.as_view()),
    path("api/inventory/", views.Inventory.as_view()),
    path("reports/legacy/", views.legacy_report),
]
