from __future__ import annotations

from django.urls import path

from .logdemo import views

urlpatterns = [
    path("", views.index, name="index"),
    path("fail", views.fail, name="fail"),
    path("stress", views.stress, name="stress"),
]
