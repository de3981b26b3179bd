from __future__ import annotations

from django.urls import path

from safe_rotating._django_site.logdemo import views

urlpatterns = [
    path("", views.index, name="index"),
    path("fail", views.fail, name="fail"),
    path("stress", views.stress, name="stress"),
]
