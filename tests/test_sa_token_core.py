"""The pure cores of service-account tokens: JWS signing and verification (jwt.py), the claims kube-apiserver
writes and judges (claims.py), and the TokenRequest's validation (tokenrequest.py). No sockets, no clock:
keys and `now` are given."""

from __future__ import annotations

import base64
import json
import string

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from podnet.apiserver.status import ApiError
from podnet.apiserver.tokens import claims, jwt, tokenrequest

from podnet import pki

NOW = 1_800_000_000
ISSUER = "https://kubernetes.default.svc.cluster.local"
ACCOUNT = {"metadata": {"name": "default", "namespace": "team-a", "uid": "sa-uid"}}
POD = {"metadata": {"name": "web", "namespace": "team-a", "uid": "pod-uid"},
       "spec": {"serviceAccountName": "default", "nodeName": "node-1"}}
NODE = {"metadata": {"name": "node-1", "uid": "node-uid"}}


@pytest.fixture(scope="module")
def es_key() -> jwt.SigningKey:
    return jwt.load_signing_key(pki.make_signing_key())


@pytest.fixture(scope="module")
def rs_key() -> jwt.SigningKey:
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    return jwt.load_signing_key(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                                  serialization.NoEncryption()))


def _segment(obj: object) -> str:
    return base64.urlsafe_b64encode(json.dumps(obj).encode()).rstrip(b"=").decode()


def _token(key: jwt.SigningKey, **overrides: object) -> str:
    body = claims.make_claims(issuer=ISSUER, audiences=[ISSUER], account=ACCOUNT, now=NOW, expiration_seconds=3600,
                              token_id="jti-1", pod=POD, node=NODE)
    return jwt.sign(body | overrides, key)


# --- jwt ----------------------------------------------------------------------------------------------


@pytest.mark.parametrize("which", ["es_key", "rs_key"])
def test_a_signed_token_verifies_with_its_key_and_names_it(which: str, request: pytest.FixtureRequest) -> None:
    key: jwt.SigningKey = request.getfixturevalue(which)
    token = jwt.sign({"sub": "x"}, key)
    header = json.loads(base64.urlsafe_b64decode(token.split(".")[0] + "=="))
    assert header == {"alg": "ES256" if which == "es_key" else "RS256", "kid": jwt.key_id(key.public_key)}
    assert jwt.verify(token, [key.public_key]) == {"sub": "x"}


def test_the_key_id_is_the_base64url_sha256_of_the_public_key_der(es_key: jwt.SigningKey) -> None:
    import hashlib
    der = es_key.public_key.public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
    assert jwt.key_id(es_key.public_key) == base64.urlsafe_b64encode(hashlib.sha256(der).digest()).rstrip(b"=").decode()


def test_another_keys_signature_is_refused(es_key: jwt.SigningKey, rs_key: jwt.SigningKey) -> None:
    other = jwt.load_signing_key(pki.make_signing_key())
    with pytest.raises(jwt.JwtError, match="no key"):
        jwt.verify(jwt.sign({"sub": "x"}, other), [es_key.public_key, rs_key.public_key])
    # The same token with its key id removed is tried against every key, and still fails.
    header, payload, signature = jwt.sign({"sub": "x"}, other).split(".")
    unnamed = f"{_segment({'alg': 'ES256'})}.{payload}.{signature}"
    with pytest.raises(jwt.JwtError, match="invalid signature"):
        jwt.verify(unnamed, [es_key.public_key])


def test_only_the_canonical_base64url_spelling_is_accepted(es_key: jwt.SigningKey) -> None:
    header, payload, signature = jwt.sign({"sub": "x"}, es_key).split(".")
    # A 64-byte signature leaves 4 unused bits in its last character: another spelling, the same bytes.
    alphabet = string.ascii_uppercase + string.ascii_lowercase + string.digits + "-_"
    twin = alphabet[alphabet.index(signature[-1]) ^ 1]
    assert base64.urlsafe_b64decode(signature[:-1] + twin + "==") == base64.urlsafe_b64decode(signature + "==")
    with pytest.raises(jwt.JwtError, match="not canonical"):
        jwt.verify(f"{header}.{payload}.{signature[:-1]}{twin}", [es_key.public_key])


def test_a_changed_payload_breaks_the_signature(es_key: jwt.SigningKey) -> None:
    header, _, signature = jwt.sign({"sub": "x"}, es_key).split(".")
    with pytest.raises(jwt.JwtError, match="invalid signature"):
        jwt.verify(f"{header}.{_segment({'sub': 'admin'})}.{signature}", [es_key.public_key])


@pytest.mark.parametrize("header", [
    {"alg": "none"},
    {"alg": "HS256"},  # a MAC keyed with the public key: the classic confusion attack
    {"alg": "RS256"},  # the algorithm of another key type
    {"alg": "ES256", "crit": ["exp"]},
])
def test_a_header_that_does_not_fit_the_key_is_refused(header: dict, es_key: jwt.SigningKey) -> None:
    _, payload, signature = jwt.sign({"sub": "x"}, es_key).split(".")
    with pytest.raises(jwt.JwtError):
        jwt.verify(f"{_segment(header | {'kid': jwt.key_id(es_key.public_key)})}.{payload}.{signature}",
                   [es_key.public_key])


@pytest.mark.parametrize("token", [
    "", "a", "a.b", "a.b.c.d", "....", "!!.??.**", f"{_segment([1])}.{_segment({})}.AA",
    f"{_segment({'alg': 'ES256'})}.{_segment('text')}.AA", f"{_segment({'alg': 'ES256'})}=.{_segment({})}.AA",
    "eyJ" + "A" * 20000 + ".e30.AA",
])
def test_malformed_tokens_are_a_jwt_error(token: str, es_key: jwt.SigningKey) -> None:
    with pytest.raises(jwt.JwtError):
        jwt.verify(token, [es_key.public_key])


def test_jwks_lists_each_key_once_with_its_parameters(es_key: jwt.SigningKey, rs_key: jwt.SigningKey) -> None:
    document = jwt.jwks([es_key.public_key, rs_key.public_key, es_key.public_key])
    assert [k["kty"] for k in document["keys"]] == ["EC", "RSA"]
    ec_jwk, rsa_jwk = document["keys"]
    assert ec_jwk["crv"] == "P-256" and ec_jwk["use"] == "sig" and ec_jwk["alg"] == "ES256"
    assert rsa_jwk["e"] == "AQAB" and rsa_jwk["alg"] == "RS256" and rsa_jwk["kid"] == jwt.key_id(rs_key.public_key)
    # The EC point round-trips to the key.
    x = int.from_bytes(base64.urlsafe_b64decode(ec_jwk["x"] + "=="), "big")
    y = int.from_bytes(base64.urlsafe_b64decode(ec_jwk["y"] + "=="), "big")
    assert ec.EllipticCurvePublicNumbers(x, y, ec.SECP256R1()).public_key() == es_key.public_key


def test_load_public_keys_reads_public_and_private_blocks(es_key: jwt.SigningKey, rs_key: jwt.SigningKey) -> None:
    public_pem = rs_key.public_key.public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
    private_pem = es_key.private_key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                                   serialization.NoEncryption())
    keys = jwt.load_public_keys(public_pem + private_pem)
    assert [jwt.key_id(k) for k in keys] == [jwt.key_id(rs_key.public_key), jwt.key_id(es_key.public_key)]
    with pytest.raises(ValueError, match="no public or private key"):
        jwt.load_public_keys(b"-----BEGIN CERTIFICATE-----\nAA==\n-----END CERTIFICATE-----\n")


# --- claims -------------------------------------------------------------------------------------------


def test_claims_are_kubernetes_own() -> None:
    body = claims.make_claims(issuer=ISSUER, audiences=["api"], account=ACCOUNT, now=NOW, expiration_seconds=600,
                              token_id="jti-1", pod=POD, node=NODE)
    assert body == {
        "aud": ["api"], "exp": NOW + 600, "iat": NOW, "nbf": NOW, "iss": ISSUER, "jti": "jti-1",
        "sub": "system:serviceaccount:team-a:default",
        "kubernetes.io": {"namespace": "team-a", "serviceaccount": {"name": "default", "uid": "sa-uid"},
                          "pod": {"name": "web", "uid": "pod-uid"}, "node": {"name": "node-1", "uid": "node-uid"}},
    }


def _check(body: dict, now: float = NOW + 10, audiences: tuple[str, ...] = (ISSUER,)) -> claims.Subject:
    return claims.check_claims(body, issuers=(ISSUER,), audiences=audiences, now=now)


def _body(**overrides: object) -> dict:
    return claims.make_claims(issuer=ISSUER, audiences=[ISSUER], account=ACCOUNT, now=NOW, expiration_seconds=3600,
                              token_id="j", pod=POD, node=NODE) | overrides


def test_a_good_token_names_its_account_and_pod_and_tells_the_pods_node_without_binding_to_it() -> None:
    subject = _check(_body())
    assert subject == claims.Subject("team-a", claims.Ref("default", "sa-uid"), pod=claims.Ref("web", "pod-uid"),
                                     pod_node=claims.Ref("node-1", "node-uid"), token_id="j")
    user = claims.user_of(subject)
    assert user.name == "system:serviceaccount:team-a:default" and user.uid == "sa-uid"
    assert user.groups == ("system:serviceaccounts", "system:serviceaccounts:team-a", "system:authenticated")
    assert dict(user.extra) == {
        "authentication.kubernetes.io/credential-id": ("JTI=j",),
        "authentication.kubernetes.io/node-name": ("node-1",), "authentication.kubernetes.io/node-uid": ("node-uid",),
        "authentication.kubernetes.io/pod-name": ("web",), "authentication.kubernetes.io/pod-uid": ("pod-uid",)}
    # The pod's node is not checked: a token outlives nothing but its pod and account.
    claims.check_objects(subject, NOW, account=ACCOUNT, pod=POD)


@pytest.mark.parametrize(("now", "accepted"), [
    (NOW + 3600 + 60, True),   # the leeway
    (NOW + 3600 + 61, False),
    (NOW - 60, True),
    (NOW - 61, False),         # not valid yet (and issued in the future)
])
def test_time_window_with_one_minute_leeway(now: int, accepted: bool) -> None:
    if accepted:
        _check(_body(), now=now)
    else:
        with pytest.raises(claims.TokenRejected):
            _check(_body(), now=now)


@pytest.mark.parametrize(("overrides", "reason"), [
    ({"iss": "https://elsewhere"}, "issuer"),
    ({"aud": ["other"]}, "audiences"),
    ({"aud": "other"}, "audiences"),
    ({"aud": 7}, "audiences"),
    ({"exp": None}, "no expiry"),
    ({"exp": "soon"}, "not a number"),
    ({"exp": True}, "not a number"),
    ({"sub": "system:serviceaccount:team-a:admin"}, "subject"),
    ({"kubernetes.io": {"namespace": "team-a"}}, "serviceaccount"),
    ({"kubernetes.io": "team-a"}, "malformed"),
    ({"kubernetes.io": {"namespace": "team-a", "serviceaccount": {"name": "default"}, "pod": {"uid": 3}}}, "pod"),
])
def test_claims_this_server_does_not_accept(overrides: dict, reason: str) -> None:
    with pytest.raises(claims.TokenRejected, match=reason):
        _check(_body(**overrides))


def test_a_single_string_audience_is_accepted() -> None:
    assert _check(_body(aud=ISSUER)).account.name == "default"


def test_objects_must_still_stand_with_the_same_uids() -> None:
    subject = _check(_body())
    claims.check_objects(subject, NOW, account=ACCOUNT, pod=POD)
    with pytest.raises(claims.TokenRejected, match="service account default of the token has been deleted"):
        claims.check_objects(subject, NOW, account=None, pod=POD)
    with pytest.raises(claims.TokenRejected, match="pod web of the token has been deleted"):
        claims.check_objects(subject, NOW, account=ACCOUNT, pod=None)
    recreated = {"metadata": POD["metadata"] | {"uid": "new-uid"}}
    with pytest.raises(claims.TokenRejected, match=r"pod UID \(new-uid\) does not match"):
        claims.check_objects(subject, NOW, account=ACCOUNT, pod=recreated)


def test_an_object_being_deleted_revokes_only_after_the_leeway() -> None:
    subject = _check(_body())
    terminating = {"metadata": POD["metadata"] | {"deletionTimestamp": "2027-01-15T08:00:00Z"}}
    stamp = 1_800_000_000 - (1_800_000_000 % 86400) + 8 * 3600  # 2027-01-15T08:00:00Z
    claims.check_objects(subject, stamp + 60, account=ACCOUNT, pod=terminating)
    with pytest.raises(claims.TokenRejected, match="deleted"):
        claims.check_objects(subject, stamp + 61, account=ACCOUNT, pod=terminating)


def test_a_secret_bound_token_checks_the_secret() -> None:
    secret = {"metadata": {"name": "s", "uid": "secret-uid"}}
    body = claims.make_claims(issuer=ISSUER, audiences=[ISSUER], account=ACCOUNT, now=NOW, expiration_seconds=600,
                              token_id="j", secret=secret)
    subject = _check(body)
    assert subject.secret == claims.Ref("s", "secret-uid") and subject.pod is None
    with pytest.raises(claims.TokenRejected):
        claims.check_objects(subject, NOW, account=ACCOUNT, secret=None)


# --- TokenRequest -------------------------------------------------------------------------------------


def _parse(spec: dict | None = None, **metadata: str) -> tokenrequest.TokenSpec:
    body = {"apiVersion": "authentication.k8s.io/v1", "kind": "TokenRequest", "metadata": metadata, "spec": spec or {}}
    return tokenrequest.parse(body, "default", "team-a", (ISSUER,))


def test_defaults_are_an_hour_and_the_apis_audience() -> None:
    assert _parse() == tokenrequest.TokenSpec((ISSUER,), 3600, None)
    assert _parse({"audiences": ["vault"], "expirationSeconds": 600}) == tokenrequest.TokenSpec(("vault",), 600, None)


@pytest.mark.parametrize(("seconds", "message"), [
    (599, 'TokenRequest.authentication.k8s.io "" is invalid: spec.expirationSeconds: Invalid value: 599: '
          "may not specify a duration less than 10 minutes"),
    (0, 'TokenRequest.authentication.k8s.io "" is invalid: spec.expirationSeconds: Invalid value: 0: '
        "may not specify a duration less than 10 minutes"),
    ((1 << 32) + 1, 'TokenRequest.authentication.k8s.io "" is invalid: spec.expirationSeconds: Invalid value: '
                    "4294967297: may not specify a duration larger than 2^32 seconds"),
])
def test_expiration_out_of_range_is_invalid(seconds: int, message: str) -> None:
    with pytest.raises(ApiError) as caught:
        _parse({"expirationSeconds": seconds})
    assert caught.value.code == 422 and caught.value.status["message"] == message


def test_the_body_names_must_be_the_urls() -> None:
    with pytest.raises(ApiError) as caught:
        _parse(name="other")
    assert caught.value.status["message"] == ('TokenRequest.authentication.k8s.io "default" is invalid: metadata.name: '
                                              'Invalid value: "other": must match the service account name if specified')
    with pytest.raises(ApiError) as caught:
        _parse(namespace="team-b")
    assert "must match the service account namespace if specified" in caught.value.status["message"]


@pytest.mark.parametrize(("ref", "message"), [
    ({"kind": "ConfigMap", "apiVersion": "v1", "name": "c"}, "cannot bind token to object of type /v1, Kind=ConfigMap"),
    ({"kind": "Pod", "apiVersion": "apps/v1", "name": "p"}, "cannot bind token to object of type apps/v1, Kind=Pod"),
])
def test_only_pods_secrets_and_nodes_can_be_bound(ref: dict, message: str) -> None:
    with pytest.raises(ApiError) as caught:
        _parse({"boundObjectRef": ref})
    assert caught.value.code == 400 and caught.value.status["message"] == message


def test_a_pod_binding_needs_the_pods_account_and_uid() -> None:
    spec = _parse({"boundObjectRef": {"kind": "Pod", "apiVersion": "v1", "name": "web", "uid": "pod-uid"}})
    tokenrequest.check_binding(spec, "default", POD)
    with pytest.raises(ApiError) as caught:
        tokenrequest.check_binding(spec, "builder", POD)
    assert caught.value.status["message"] == ('cannot bind token for serviceaccount "builder" to pod running with '
                                              "different serviceaccount name.")
    with pytest.raises(ApiError) as caught:
        tokenrequest.check_binding(spec, "default", {"metadata": {"uid": "other"}, "spec": {}})
    assert caught.value.code == 409 and caught.value.status["message"].startswith(
        'Operation cannot be fulfilled on Pod "web": the UID in the bound object reference (pod-uid) does not match')


def test_the_answer_carries_the_token_and_its_expiry() -> None:
    spec = _parse({"expirationSeconds": 600})
    answered = tokenrequest.answer(spec, ACCOUNT, "t.o.k", NOW)
    assert answered["status"] == {"token": "t.o.k", "expirationTimestamp": "2027-01-15T08:10:00Z"}
    assert answered["metadata"]["creationTimestamp"] == "2027-01-15T08:00:00Z"
    assert answered["spec"] == {"audiences": [ISSUER], "expirationSeconds": 600, "boundObjectRef": None}


def test_an_issued_token_is_accepted_end_to_end(es_key: jwt.SigningKey) -> None:
    token = _token(es_key)
    subject = _check(jwt.verify(token, [es_key.public_key]))
    claims.check_objects(subject, NOW, account=ACCOUNT, pod=POD)


@pytest.mark.parametrize("pem", [b"nope", b"-----BEGIN CERTIFICATE-----\nAA==\n-----END CERTIFICATE-----\n",
                                 b"-----BEGIN PRIVATE KEY-----\nAA==\n-----END PRIVATE KEY-----\n"])
def test_a_file_without_a_private_key_is_refused_in_one_line(pem: bytes) -> None:
    with pytest.raises(ValueError, match="^data does not contain a valid RSA or ECDSA private key$"):
        jwt.load_signing_key(pem)
