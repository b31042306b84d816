"""Service-account tokens in the API server: issuing them (`serviceaccounts/token`), accepting them
(the authenticator after client certificates and the token file), and publishing the keys that check
them (`/.well-known/openid-configuration`, `/openid/v1/jwks`), as kube-apiserver does with
`--service-account-signing-key-file`, `--service-account-key-file`, `--service-account-issuer` and
`--api-audiences`.

With verifying keys but no signing key no token is issued and the subresource is not served (404), as
kube-apiserver without an issuer. An accepted token costs one read of the ServiceAccount and
one of its bound object, from storage and not a cache, so that deleting either revokes the token at once.
The decisions are the pure cores': jwt.py (signatures), claims.py (claims and objects), tokenrequest.py.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
import uuid
from dataclasses import dataclass

from aiohttp import web
from cryptography.hazmat.primitives.asymmetric import ec
from podnet.apiserver import status
from podnet.apiserver.audit import log as audit_log
from podnet.apiserver.auth import User
from podnet.apiserver.codec import from_storage
from podnet.apiserver.config import ApiServerConfig, read_flag_file
from podnet.apiserver.handlers import RESOURCE_KEY, USER_KEY, VERB_KEY, Resources, respond, storage_key
from podnet.apiserver.rbac.authorizer import Attributes
from podnet.apiserver.storage.base import Store

from podnet.api.kinds import Kind, lookup

from . import claims, jwt, tokenrequest

log = logging.getLogger(__name__)

DISCOVERY_PATH = "/.well-known/openid-configuration"
JWKS_PATH = "/openid/v1/jwks"
_CACHE_CONTROL = "public, max-age=3600"  # kube-apiserver's, for both documents


@dataclass(frozen=True)
class TokenKeys:
    issuer: str
    audiences: tuple[str, ...]
    public_keys: tuple[jwt.PublicKey, ...]
    signing_key: jwt.SigningKey | None = None


def load_keys(config: ApiServerConfig) -> TokenKeys:
    """The keys the config names; ValueError naming the flag of a file that is bad. With no key at all, a
    key made now and kept in memory: tokens then last as long as this process (`podnet up` gives a file,
    which every API server of the cluster shares)."""
    signing = None
    public: list[jwt.PublicKey] = []
    if config.service_account_signing_key_file:
        signing = read_flag_file(config.service_account_signing_key_file, "--service-account-signing-key-file",
                                 jwt.load_signing_key)
        public.append(signing.public_key)
    for path in config.service_account_key_files:
        public.extend(read_flag_file(path, "--service-account-key-file", jwt.load_public_keys))
    if not public:
        signing = jwt.SigningKey(ec.generate_private_key(ec.SECP256R1()))
        public.append(signing.public_key)
    audiences = config.api_audiences or (config.service_account_issuer,)
    return TokenKeys(config.service_account_issuer, tuple(audiences), tuple(public), signing)


class ServiceAccountTokens:
    def __init__(self, keys: TokenKeys, store: Store, storage_timeout: float):
        self.keys = keys
        self._store = store
        self._timeout = storage_timeout

    # --- authentication ----------------------------------------------------------------------------

    async def authenticate(self, authorization: str | None) -> User | None:
        """The service account a bearer token proves to be; None when it is no token of ours, or one that
        is forged, expired, for another audience, or whose account or bound object is gone."""
        scheme, _, token = (authorization or "").partition(" ")
        token = token.strip()
        if scheme.lower() != "bearer" or token.count(".") != 2:
            return None
        try:
            subject = claims.check_claims(jwt.verify(token, self.keys.public_keys), issuers=(self.keys.issuer,),
                                          audiences=self.keys.audiences, now=time.time())
            objects = await self._objects(subject)
            claims.check_objects(subject, time.time(), **objects)
        except (jwt.JwtError, claims.TokenRejected) as exc:
            log.debug("service account token refused: %s", exc)
            return None
        return claims.user_of(subject)

    async def _objects(self, subject: claims.Subject) -> dict[str, dict | None]:
        wanted = {"account": ("ServiceAccount", subject.namespace, subject.account)}
        for name, kind, namespace, ref in (("pod", "Pod", subject.namespace, subject.pod),
                                           ("secret", "Secret", subject.namespace, subject.secret),
                                           ("node", "Node", None, subject.node)):
            if ref is not None:
                wanted[name] = (kind, namespace, ref)
        try:
            async with asyncio.timeout(self._timeout):
                found = await asyncio.gather(*(self._store.get(storage_key(lookup(kind), namespace, ref.name))
                                               for kind, namespace, ref in wanted.values()))
        except Exception as exc:  # the store's failure: the token cannot be judged, so it proves nothing
            raise claims.TokenRejected(f"the token's objects cannot be read: {exc}") from None
        return {name: None if kv is None else from_storage(kv.value, kv.mod_revision)
                for name, kv in zip(wanted, found, strict=True)}

    # --- issuing -----------------------------------------------------------------------------------

    def issue(self, spec: tokenrequest.TokenSpec, account: dict, bound: dict | None, node: dict | None,
              now: int, token_id: str) -> str:
        assert self.keys.signing_key is not None
        kind = spec.bound.kind if spec.bound else None
        token_claims = claims.make_claims(
            issuer=self.keys.issuer, audiences=spec.audiences, account=account, now=now,
            expiration_seconds=spec.expiration_seconds, token_id=token_id,
            pod=bound if kind == "Pod" else None, secret=bound if kind == "Secret" else None,
            node=bound if kind == "Node" else node)
        return jwt.sign(token_claims, self.keys.signing_key)

    def add_routes(self, app: web.Application, resources: Resources) -> None:
        if self.keys.signing_key is not None:
            app.router.add_post("/api/v1/namespaces/{namespace}/serviceaccounts/{name}/token",
                                lambda request: self._token_request(request, resources))
        app.router.add_get(DISCOVERY_PATH, self._discovery)
        app.router.add_get(JWKS_PATH, self._jwks)

    async def _token_request(self, request: web.Request, resources: Resources) -> web.Response:
        namespace, name = request.match_info["namespace"], request.match_info["name"]
        accounts = lookup("ServiceAccount")
        request[RESOURCE_KEY] = accounts.plural
        request[VERB_KEY] = "create"
        user = request[USER_KEY]
        if not resources.allowed(user, Attributes("create", namespace, "", accounts.plural, "token", name)).allowed:
            raise status.forbidden(user.name, "create", accounts, namespace, request.path, name=name, subresource="token")
        body, _ = await resources._read_body(request)  # JSON, YAML or msgpack, as for any write
        spec = tokenrequest.parse(body, name, namespace, self.keys.audiences)
        account = await _read_object(resources, accounts, namespace, name)
        bound = node = None
        if spec.bound is not None:
            bound_kind = lookup(spec.bound.kind)
            bound = await _read_object(resources, bound_kind, namespace if bound_kind.namespaced else None,
                                       spec.bound.name)
            tokenrequest.check_binding(spec, name, bound)
            node = await self._node_of(resources, bound) if spec.bound.kind == "Pod" else None
        now, token_id = int(time.time()), str(uuid.uuid4())
        token = self.issue(spec, account, bound, node, now, token_id)
        audit_log.annotate("authentication.kubernetes.io/issued-credential-id", f"JTI={token_id}")
        return respond(request, tokenrequest.answer(spec, account, token, now), 201)

    @staticmethod
    async def _node_of(resources: Resources, pod: dict) -> dict | None:
        """The node a pod runs on, for the token's informational claim: its name alone when it is gone."""
        node_name = (pod.get("spec") or {}).get("nodeName")
        if not node_name:
            return None
        try:
            return await _read_object(resources, lookup("Node"), None, node_name)
        except status.ApiError:
            return {"metadata": {"name": node_name}}

    # --- discovery ---------------------------------------------------------------------------------

    async def _discovery(self, request: web.Request) -> web.Response:
        document = {
            "issuer": self.keys.issuer,
            "jwks_uri": f"https://{request.host}{JWKS_PATH}",
            "response_types_supported": ["id_token"],
            "subject_types_supported": ["public"],
            "id_token_signing_alg_values_supported": sorted({jwt.algorithm(k) for k in self.keys.public_keys}),
        }
        return web.json_response(document, headers={"Cache-Control": _CACHE_CONTROL}, dumps=_compact)

    async def _jwks(self, request: web.Request) -> web.Response:
        return web.json_response(jwt.jwks(self.keys.public_keys), content_type="application/jwk-set+json",
                                 headers={"Cache-Control": _CACHE_CONTROL}, dumps=_compact)


def _compact(document: object) -> str:
    return json.dumps(document, separators=(",", ":"))


async def _read_object(resources: Resources, kind: Kind, namespace: str | None, name: str) -> dict:
    """The object, or the API's 404 Status for it."""
    kv = await resources._current(kind, namespace, name)
    return from_storage(kv.value, kv.mod_revision)


def subresources(kind: Kind) -> list[dict]:
    """The discovery entry of `serviceaccounts/token`."""
    return [tokenrequest.DISCOVERY] if kind.built_in == "ServiceAccount" else []
