"""A relying party nobody on the project wrote: Authlib runs the authorization-code flow with PKCE
against a tenant's OpenID Connect provider, with the hosted login page driven by Chromium
(login.mjs), then checks the ID token with Authlib's own JOSE, reads UserInfo, refreshes,
introspects, revokes and logs out (RP-initiated). Started by e2e/tests/e2e/hosted_login.rs with its
task as JSON on stdin:
  { gateway, ca, tenant, client_id, client_secret, redirect_uri, post_logout_redirect_uri,
    email, password, totp_secret? }
Prints what it saw as JSON; any failed check raises (a non-zero exit with the reason)."""

import json
import os
import subprocess
import sys
import time
from urllib.parse import parse_qs, urlparse

import pyotp
import requests
from authlib.common.security import generate_token
from authlib.integrations.requests_client import OAuth2Session
from authlib.jose import JsonWebKey, jwt
from authlib.oidc.core import CodeIDToken

task = json.load(sys.stdin)
here = os.path.dirname(os.path.abspath(__file__))
ca = task["ca"]
# The gateway's certificate is the test constellation CA's: every request trusts that CA alone.
os.environ["REQUESTS_CA_BUNDLE"] = ca
seen = {}


def check(condition, what):
    if not condition:
        raise AssertionError(what)


meta = requests.get(f"{task['gateway']}/t/{task['tenant']}/.well-known/openid-configuration", verify=ca, timeout=30)
meta.raise_for_status()
meta = meta.json()
check(meta["code_challenge_methods_supported"] == ["S256"], f"PKCE methods {meta}")
seen["issuer"] = meta["issuer"]

client = OAuth2Session(
    task["client_id"],
    task["client_secret"],
    scope="openid email profile offline_access",
    redirect_uri=task["redirect_uri"],
    code_challenge_method="S256",
    token_endpoint_auth_method="client_secret_basic",
)

verifier = generate_token(64)
nonce = generate_token(20)
url, state = client.create_authorization_url(meta["authorization_endpoint"], nonce=nonce, code_verifier=verifier)

browser_task = {"url": url, "redirect_uri": task["redirect_uri"], "email": task["email"], "password": task["password"]}
if task.get("totp_secret"):
    totp = pyotp.TOTP(task["totp_secret"])
    # Each code is accepted once (the enrolment used this window's): the next window's, at its start.
    time.sleep(totp.interval - time.time() % totp.interval + 1)
    browser_task["totp"] = totp.now()
run = subprocess.run(
    ["node", os.path.join(here, "login.mjs")],
    input=json.dumps(browser_task),
    capture_output=True,
    text=True,
    timeout=120,
)
check(run.returncode == 0, f"the browser did not finish: {run.stderr}")
browser = json.loads(run.stdout)
seen["titles"] = browser["titles"]
check(browser["csp_violations"] == [], f"CSP violations: {browser['csp_violations']}")
callback = browser["callback"]
query = parse_qs(urlparse(callback).query)
check(query["state"] == [state], "state returned as sent")
check(query["iss"] == [meta["issuer"]], "RFC 9207 iss")

token = client.fetch_token(meta["token_endpoint"], authorization_response=callback, code_verifier=verifier)
check(token["token_type"] == "Bearer", f"token type {token}")

jwks = requests.get(meta["jwks_uri"], verify=ca, timeout=30).json()
claims = jwt.decode(
    token["id_token"],
    JsonWebKey.import_key_set(jwks),
    claims_cls=CodeIDToken,
    claims_options={"iss": {"essential": True, "value": meta["issuer"]}},
    claims_params={"nonce": nonce, "client_id": task["client_id"]},
)
claims.validate(leeway=30)
seen["id_token"] = {k: claims[k] for k in ("iss", "sub", "aud", "amr", "sid")}

info = client.get(meta["userinfo_endpoint"], timeout=30)
check(info.status_code == 200, f"userinfo {info.status_code} {info.text}")
info = info.json()
check(info["sub"] == claims["sub"] and info["email"] == task["email"], f"userinfo {info}")
seen["userinfo"] = info

refreshed = client.refresh_token(meta["token_endpoint"], refresh_token=token["refresh_token"])
check(refreshed["refresh_token"] != token["refresh_token"], "the refresh token rotates")


def introspect(value):
    r = client.introspect_token(meta["introspection_endpoint"], token=value)
    r.raise_for_status()
    return r.json()


active = introspect(refreshed["access_token"])
check(active["active"] and active["sub"] == claims["sub"], f"introspection {active}")
# The used refresh token is not active any more; its successor is.
check(not introspect(token["refresh_token"])["active"], "a used refresh token is inactive")
check(introspect(refreshed["refresh_token"])["active"], "the successor is active")
seen["introspected"] = active

revoked = client.revoke_token(meta["revocation_endpoint"], token=refreshed["refresh_token"])
check(revoked.status_code == 200, f"revocation {revoked.status_code}")
check(not introspect(refreshed["access_token"])["active"], "revocation ended the session")

# RP-initiated logout with a second session: back to the registered URI, with state.
verifier = generate_token(64)
nonce = generate_token(20)
url, state = client.create_authorization_url(meta["authorization_endpoint"], nonce=nonce, code_verifier=verifier)
browser_task["url"] = url
if task.get("totp_secret"):
    totp = pyotp.TOTP(task["totp_secret"])
    time.sleep(totp.interval - time.time() % totp.interval + 1)  # each code is accepted once
    browser_task["totp"] = totp.now()
run = subprocess.run(["node", os.path.join(here, "login.mjs")], input=json.dumps(browser_task),
                     capture_output=True, text=True, timeout=120)
check(run.returncode == 0, f"the browser did not finish: {run.stderr}")
second = client.fetch_token(meta["token_endpoint"], authorization_response=json.loads(run.stdout)["callback"],
                            code_verifier=verifier)
logout = requests.get(
    meta["end_session_endpoint"],
    params={
        "id_token_hint": second["id_token"],
        "post_logout_redirect_uri": task["post_logout_redirect_uri"],
        "state": "bye",
    },
    verify=ca,
    allow_redirects=False,
    timeout=30,
)
check(logout.status_code == 303, f"logout {logout.status_code} {logout.text}")
check(logout.headers["location"] == task["post_logout_redirect_uri"] + "?state=bye", logout.headers["location"])
check(not introspect(second["access_token"])["active"], "logout ended the session")
seen["logged_out"] = True

# The client acting for itself (client_credentials): a token with the client's permissions.
machine = OAuth2Session(task["client_id"], task["client_secret"], token_endpoint_auth_method="client_secret_basic")
own = machine.fetch_token(meta["token_endpoint"], grant_type="client_credentials")
users = requests.get(f"{task['gateway']}/v1/users", headers={"Authorization": f"Bearer {own['access_token']}"}, timeout=30)
check(users.status_code == 200, f"the client's own token lists users: {users.status_code} {users.text}")
seen["machine"] = {"scope": own["scope"], "users": len(users.json()["users"])}

print(json.dumps(seen))
