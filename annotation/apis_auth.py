"""API tokens: obtain one with a username and password, revoke it (logout) or all of the user's (logout everywhere).

Tokens are django-rest-knox's (stored hashed, expiring after ``REST_KNOX["TOKEN_TTL"]``); the password check goes
through ``django.contrib.auth.authenticate`` with the request, so django-axes' lockout applies, and the endpoint is
throttled per client address (scope ``auth``)."""

from __future__ import annotations

from django.contrib.auth import authenticate
from django.utils import timezone
from drf_spectacular.utils import OpenApiResponse, extend_schema, inline_serializer
from knox.models import AuthToken
from knox.settings import knox_settings
from rest_framework import serializers, status
from rest_framework.authentication import SessionAuthentication
from rest_framework.permissions import AllowAny, IsAuthenticated
from rest_framework.response import Response
from rest_framework.views import APIView

from annotation.authentication import ERR_LOCKED_OUT, TokenAuthentication

ERR_BAD_CREDENTIALS = "Wrong username or password."
ERR_TOO_MANY_TOKENS = "This account already holds the maximum number of tokens; log out one of them first."


class TokenObtainApi(APIView):
    """A new API token for a username and password (``Authorization: Token <token>`` on later calls)."""

    authentication_classes: list = []
    permission_classes = [AllowAny]
    throttle_scope = "auth"

    class InputSerializer(serializers.Serializer):
        username = serializers.CharField(max_length=150)
        password = serializers.CharField(max_length=4096, trim_whitespace=False)

        class Meta:
            ref_name = "TokenObtainInput"

    class OutputSerializer(serializers.Serializer):
        token = serializers.CharField()
        expiry = serializers.DateTimeField(allow_null=True)

        class Meta:
            ref_name = "TokenObtainOutput"

    @extend_schema(
        request=InputSerializer, auth=[],
        responses={201: OutputSerializer, 400: OpenApiResponse(description="Wrong username or password."),
                   403: OpenApiResponse(description="Too many tokens."),
                   429: OpenApiResponse(description="Locked out or throttled.")},
    )
    def post(self, request):
        data = self.InputSerializer(data=request.data)
        data.is_valid(raise_exception=True)
        user = authenticate(request._request, **data.validated_data)  # None when wrong or locked out (axes)
        if user is None:
            if getattr(request._request, "axes_locked_out", False):
                return Response({"detail": ERR_LOCKED_OUT}, status=status.HTTP_429_TOO_MANY_REQUESTS)
            return Response({"detail": ERR_BAD_CREDENTIALS}, status=status.HTTP_400_BAD_REQUEST)
        limit = knox_settings.TOKEN_LIMIT_PER_USER
        if limit is not None:
            AuthToken.objects.filter(user=user, expiry__lte=timezone.now()).delete()
            if AuthToken.objects.filter(user=user).count() >= limit:
                return Response({"detail": ERR_TOO_MANY_TOKENS}, status=status.HTTP_403_FORBIDDEN)
        instance, token = AuthToken.objects.create(user=user)
        return Response(self.OutputSerializer({"token": token, "expiry": instance.expiry}).data,
                        status=status.HTTP_201_CREATED)


class TokenRevokeApi(APIView):
    """Revoke the token this request carries (logout)."""

    authentication_classes = [TokenAuthentication]
    permission_classes = [IsAuthenticated]

    @extend_schema(request=None, responses={204: None})
    def post(self, request):
        request.auth.delete()
        return Response(status=status.HTTP_204_NO_CONTENT)


class TokenRevokeAllApi(APIView):
    """Revoke every token of the signed-in user (logout everywhere)."""

    authentication_classes = [TokenAuthentication, SessionAuthentication]
    permission_classes = [IsAuthenticated]

    @extend_schema(request=None, responses={200: inline_serializer("TokenRevokeAllResult", {
        "revoked": serializers.IntegerField()})})
    def post(self, request):
        revoked, _ = AuthToken.objects.filter(user=request.user).delete()
        return Response({"revoked": revoked})
